{#- Models land in plain schemas (staging, intermediate, seeds, main for marts) rather than
    dbt's default "<target>_<custom>" names, so analysts query main.ingest_manifest. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
