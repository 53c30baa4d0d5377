{% macro pacs2xnat_today() -%}
    {#- The cycle's "today": var('today') when a test or a rerun pins it, else the clock. -#}
    {%- if var('today', none) -%}
        cast('{{ var("today") }}' as date)
    {%- else -%}
        current_date
    {%- endif -%}
{%- endmacro %}
