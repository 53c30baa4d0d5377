{% macro normalise_description(column) -%}
    {#- Study descriptions as people mean them: case, accents, punctuation and runs of white
        space do not matter, "&" is "and", "w/" is "with"
        and "w/o" is "without".
        "CT  Neck/Chest (contrast)" -> "ct neck chest contrast";
        "CT Head & Neck w/ contrast" -> "ct head and neck with contrast".
        connectors/rules.py normalise_description() is the same rule in Python
        (tests/test_rules.py checks the two agree). -#}
    nullif(
        trim(
            regexp_replace(
                regexp_replace(
                    regexp_replace(
                        replace(lower({{ strip_accents("coalesce(" ~ column ~ ", '')") }}), '&', ' and '),
                        '(^|[^a-z0-9])w/o([^a-z0-9]|$)', '\1 without \2', 'g'
                    ),
                    '(^|[^a-z0-9])w/', '\1 with ', 'g'
                ),
                '[^a-z0-9]+', ' ', 'g'
            )
        ),
        ''
    )
{%- endmacro %}
