{#- DICOM value normalisation used by staging. Each returns null for empty or malformed input. -#}

{% macro dicom_date(column) -%}
    {#- DA "YYYYMMDD" (also the old ACR-NEMA "YYYY.MM.DD" and ISO "YYYY-MM-DD") -> date -#}
    {{ yyyymmdd_to_date("regexp_replace(trim(" ~ column ~ "), '[.\\-/]', '', 'g')") }}
{%- endmacro %}

{% macro dicom_time(column) -%}
    {#- TM "HHMMSS.FFFFFF", "HHMMSS", "HHMM" or "HH" (also "HH:MM:SS") -> time -#}
    {%- set t = "replace(trim(" ~ column ~ "), ':', '')" -%}
    case
        when {{ regex_full_match(t, '([01][0-9]|2[0-3])([0-5][0-9]([0-5][0-9](\\.[0-9]{1,6})?)?)?') }}
            then make_time(
                cast(substr({{ t }}, 1, 2) as integer),
                coalesce(cast(nullif(substr({{ t }}, 3, 2), '') as integer), 0),
                coalesce(cast(nullif(substr({{ t }}, 5), '') as double precision), 0)
            )
    end
{%- endmacro %}

{% macro dicom_string(column) -%}
    {#- trimmed, with DICOM's space/NUL padding removed; empty -> null -#}
    nullif(trim({{ without_nul(column) }}), '')
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
            {{ sorted_words(
                "regexp_replace(upper(" ~ strip_accents("coalesce(" ~ column ~ ", '')")
                ~ "), '[^A-Z0-9]+', ' ', 'g')",
                "' '"
            ) }},
            ' '
        ),
        ''
    )
{%- endmacro %}

{% macro dicom_code_list(column) -%}
    {#- A multi-valued CS ("CT\PT\SR") -> sorted, distinct, upper-case list ['CT', 'PT', 'SR'] -#}
    {{ sorted_words("upper(coalesce(" ~ column ~ ", ''))", "chr(92)", trimmed=true, distinct=true) }}
{%- endmacro %}
