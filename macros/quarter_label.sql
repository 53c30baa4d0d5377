{#- The calendar quarter of a date as '2025-Q3'; 'no date' when the date is null. -#}
{% macro quarter_label(date_expression) -%}
    coalesce(
        cast(cast(extract(year from {{ date_expression }}) as integer) as varchar)
        || '-Q'
        || cast(cast(extract(quarter from {{ date_expression }}) as integer) as varchar),
        'no date'
    )
{%- endmacro %}
