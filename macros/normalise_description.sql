{% macro normalise_description(column) -%}
    {#- Study descriptions as people mean them: case, accents, punctuation and runs of white
        space do not matter. "CT  Neck/Chest (contrast)" -> "ct neck chest contrast".
        connectors/rules.py normalise_description() is the same rule in Python
        (tests/test_rules.py checks the two agree). -#}
    nullif(
        trim(
            regexp_replace(
                lower(strip_accents(coalesce({{ column }}, ''))),
                '[^a-z0-9]+', ' ', 'g'
            )
        ),
        ''
    )
{%- endmacro %}
