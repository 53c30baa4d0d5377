{#- DICOM value normalisation used by staging. Each returns null for empty or malformed input. -#}

{% macro dicom_date(column) -%}
    {#- DA "YYYYMMDD" (also the old ACR-NEMA "YYYY.MM.DD" and ISO "YYYY-MM-DD") -> date -#}
    try_strptime(
        regexp_replace(trim({{ column }}), '[.\-/]', '', 'g'), '%Y%m%d'
    )::date
{%- endmacro %}

{% macro dicom_time(column) -%}
    {#- TM "HHMMSS.FFFFFF", "HHMMSS", "HHMM" or "HH" (also "HH:MM:SS") -> time -#}
    {%- set t = "replace(trim(" ~ column ~ "), ':', '')" -%}
    case
        when regexp_full_match({{ t }}, '([01][0-9]|2[0-3])([0-5][0-9]([0-5][0-9](\.[0-9]{1,6})?)?)?')
            then make_time(
                cast(substr({{ t }}, 1, 2) as bigint),
                coalesce(cast(nullif(substr({{ t }}, 3, 2), '') as bigint), 0),
                coalesce(cast(nullif(substr({{ t }}, 5), '') as double), 0)
            )
    end
{%- endmacro %}

{% macro dicom_string(column) -%}
    {#- trimmed, with DICOM's space/NUL padding removed; empty -> null -#}
    nullif(trim(replace({{ column }}, chr(0), '')), '')
{%- endmacro %}

{% macro dicom_person_name(column) -%}
    {#- PN "FAMILY^GIVEN^MIDDLE^PREFIX^SUFFIX" -> "FAMILY^GIVEN^MIDDLE" without trailing carets;
        only the alphabetic representation (before the first "=") is kept -#}
    nullif(
        regexp_replace(trim(split_part({{ column }}, '=', 1)), '\^+$', ''),
        ''
    )
{%- endmacro %}

{% macro normalise_person_name(column) -%}
    {#- For comparing names from PACS and from the master list: upper case, accents and
        punctuation removed, name parts sorted, so "DOE^JOHN", "Doe, John" and
        "John DOE" all become "DOE JOHN". -#}
    nullif(
        array_to_string(
            list_sort(
                list_filter(
                    string_split(
                        regexp_replace(
                            upper(strip_accents(coalesce({{ column }}, ''))),
                            '[^A-Z0-9]+', ' ', 'g'
                        ),
                        ' '
                    ),
                    lambda part: part <> ''
                )
            ),
            ' '
        ),
        ''
    )
{%- endmacro %}

{% macro dicom_code_list(column) -%}
    {#- A multi-valued CS ("CT\PT\SR") -> sorted, distinct, upper-case list ['CT', 'PT', 'SR'] -#}
    list_sort(
        list_distinct(
            list_transform(
                list_filter(
                    string_split(upper(coalesce({{ column }}, '')), chr(92)),
                    lambda code: trim(code) <> ''
                ),
                lambda code: trim(code)
            )
        )
    )
{%- endmacro %}
