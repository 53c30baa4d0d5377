{#- The calendar quarter of a date as '2025-Q3'; 'no date' when the date is null. -#}
{% macro quarter_label(date_expression) -%}
    coalesce(
        cast(year({{ date_expression }}) as varchar)
        || '-Q'
        || cast(quarter({{ date_expression }}) as varchar),
        'no date'
    )
{%- endmacro %}
