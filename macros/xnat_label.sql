{% macro xnat_label(column) -%}
    {#- XNAT labels allow letters, digits, "_" and "-" only: anything else becomes "_".
        "RA 1234/5" -> "RA_1234_5"; empty -> null. -#}
    nullif(regexp_replace(trim(coalesce({{ column }}, '')), '[^A-Za-z0-9_-]', '_', 'g'), '')
{%- endmacro %}
