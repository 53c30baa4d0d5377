{#- SQL that DuckDB and PostgreSQL spell differently, in one place (adapter.dispatch): the
    models call these and run unchanged on the DuckDB file and on the shared PostgreSQL
    warehouse. Each `duckdb__` form is what the models said before; each `postgres__` form
    gives the same answer on PostgreSQL 15 (tests/models/test_dbt_postgres.py builds the
    whole project on both and compares every mart). -#}

{% macro regex_full_match(expression, pattern) -%}
    {{ return(adapter.dispatch('regex_full_match', 'pacs2xnat')(expression, pattern)) }}
{%- endmacro %}
{% macro duckdb__regex_full_match(expression, pattern) -%}
    regexp_full_match({{ expression }}, '{{ pattern }}')
{%- endmacro %}
{% macro postgres__regex_full_match(expression, pattern) -%}
    ({{ expression }} ~ '^(?:{{ pattern }})$')
{%- endmacro %}

{% macro regex_group(expression, pattern) -%}
    {#- the text the first group of `pattern` matched; '' when it does not match, null on null -#}
    {{ return(adapter.dispatch('regex_group', 'pacs2xnat')(expression, pattern)) }}
{%- endmacro %}
{% macro duckdb__regex_group(expression, pattern) -%}
    regexp_extract({{ expression }}, '{{ pattern }}', 1)
{%- endmacro %}
{% macro postgres__regex_group(expression, pattern) -%}
    case
        when {{ expression }} is not null
            then coalesce(substring({{ expression }} from '{{ pattern }}'), '')
    end
{%- endmacro %}

{% macro strip_accents(expression) -%}
    {{ return(adapter.dispatch('strip_accents', 'pacs2xnat')(expression)) }}
{%- endmacro %}
{% macro duckdb__strip_accents(expression) -%}
    strip_accents({{ expression }})
{%- endmacro %}
{% macro postgres__strip_accents(expression) -%}
    {#- the Latin letters with diacritics (no unaccent extension needed) -#}
    translate(
        {{ expression }},
        'ÀÁÂÃÄÅĀĂĄàáâãäåāăąÇĆĈĊČçćĉċčĎďÈÉÊËĒĔĖĘĚèéêëēĕėęěĜĞĠĢĝğġģĤĥÌÍÎÏĨĪĬĮİìíîïĩīĭįıĴĵĶķĹĻĽĺļľŁłÑŃŅŇñńņňÒÓÔÕÖØŌŎŐòóôõöøōŏőŔŖŘŕŗřŚŜŞŠśŝşšŢŤţťÙÚÛÜŨŪŬŮŰŲùúûüũūŭůűųŴŵÝŸŶýÿŷŹŻŽźżž',
        'AAAAAAAAAaaaaaaaaaCCCCCcccccDdEEEEEEEEEeeeeeeeeeGGGGggggHhIIIIIIIIIiiiiiiiiiJjKkLLLlllLlNNNNnnnnOOOOOOOOOoooooooooRRRrrrSSSSssssTTttUUUUUUUUUUuuuuuuuuuuWwYYYyyyZZZzzz'
    )
{%- endmacro %}

{% macro try_cast_as(expression, data_type) -%}
    {#- cast, or null when the text is not a value of the type (integer, date, timestamp) -#}
    {{ return(adapter.dispatch('try_cast_as', 'pacs2xnat')(expression, data_type)) }}
{%- endmacro %}
{% macro duckdb__try_cast_as(expression, data_type) -%}
    try_cast({{ expression }} as {{ data_type }})
{%- endmacro %}
{% macro postgres__try_cast_as(expression, data_type) -%}
    {%- if data_type == 'integer' -%}
        case
            when {{ expression }} ~ '^\s*[+-]?[0-9]{1,9}\s*$'
                then cast({{ expression }} as integer)
        end
    {%- elif data_type == 'date' -%}
        case
            when {{ expression }} ~ '^\s*[0-9]{4}-[0-9]{2}-[0-9]{2}\s*$'
                then {{ postgres__yyyymmdd_to_date("replace(trim(" ~ expression ~ "), '-', '')") }}
        end
    {%- elif data_type == 'timestamp' -%}
        case
            when {{ expression }}
                ~ '^\s*[0-9]{4}-[0-9]{2}-[0-9]{2}([ T]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?)?\s*$'
                and {{ postgres__yyyymmdd_to_date(
                    "replace(substr(trim(" ~ expression ~ "), 1, 10), '-', '')"
                ) }} is not null
                then cast(trim({{ expression }}) as timestamp)
        end
    {%- else -%}
        {{ exceptions.raise_compiler_error("try_cast_as: no PostgreSQL form for " ~ data_type) }}
    {%- endif -%}
{%- endmacro %}

{% macro yyyymmdd_to_date(expression) -%}
    {#- "YYYYMMDD" -> date; null unless it is a real calendar date -#}
    {{ return(adapter.dispatch('yyyymmdd_to_date', 'pacs2xnat')(expression)) }}
{%- endmacro %}
{% macro duckdb__yyyymmdd_to_date(expression) -%}
    try_strptime({{ expression }}, '%Y%m%d')::date
{%- endmacro %}
{% macro postgres__yyyymmdd_to_date(expression) -%}
    {%- set y = "cast(substr(" ~ expression ~ ", 1, 4) as integer)" -%}
    {%- set m = "cast(substr(" ~ expression ~ ", 5, 2) as integer)" -%}
    {%- set d = "cast(substr(" ~ expression ~ ", 7, 2) as integer)" -%}
    {#- nested cases: PostgreSQL evaluates a case's branches in order, an "and" in any order -#}
    case
        when {{ expression }} ~ '^[0-9]{8}$'
            and substr({{ expression }}, 1, 4) <> '0000'
            and substr({{ expression }}, 5, 2) between '01' and '12'
            and substr({{ expression }}, 7, 2) between '01' and '31'
            then case
                when extract(
                    month from make_date({{ y }}, {{ m }}, 1) + ({{ d }} - 1)
                ) = {{ m }}
                    then make_date({{ y }}, {{ m }}, {{ d }})
            end
    end
{%- endmacro %}

{% macro without_nul(expression) -%}
    {#- DICOM pads with NUL; PostgreSQL text can never hold one, so there is nothing to drop -#}
    {{ return(adapter.dispatch('without_nul', 'pacs2xnat')(expression)) }}
{%- endmacro %}
{% macro duckdb__without_nul(expression) -%}
    replace({{ expression }}, chr(0), '')
{%- endmacro %}
{% macro postgres__without_nul(expression) -%}
    {{ expression }}
{%- endmacro %}

{% macro sorted_words(expression, separator, trimmed=false, distinct=false) -%}
    {#- The non-empty parts of `expression` split on `separator` (trimmed, and without
        repeats, when asked), sorted, as a list (DuckDB) or an array (PostgreSQL) -#}
    {{ return(adapter.dispatch('sorted_words', 'pacs2xnat')(expression, separator, trimmed, distinct)) }}
{%- endmacro %}
{% macro duckdb__sorted_words(expression, separator, trimmed=false, distinct=false) -%}
    {%- set parts -%}
        list_transform(
            list_filter(
                string_split({{ expression }}, {{ separator }}),
                lambda part: trim(part) <> ''
            ),
            lambda part: {{ 'trim(part)' if trimmed else 'part' }}
        )
    {%- endset -%}
    list_sort({{ 'list_distinct(' ~ parts ~ ')' if distinct else parts }})
{%- endmacro %}
{% macro postgres__sorted_words(expression, separator, trimmed=false, distinct=false) -%}
    array(
        select {{ 'distinct' if distinct }} {{ 'trim(part)' if trimmed else 'part' }} collate "C"
        from unnest(string_to_array({{ expression }}, {{ separator }})) as parts (part)
        where trim(part) <> ''
        order by 1
    )
{%- endmacro %}

{% macro most_frequent(expression) -%}
    {#- the most frequent value of a group; the smallest of those tied -#}
    {{ return(adapter.dispatch('most_frequent', 'pacs2xnat')(expression)) }}
{%- endmacro %}
{% macro duckdb__most_frequent(expression) -%}
    mode({{ expression }} order by {{ expression }})
{%- endmacro %}
{% macro postgres__most_frequent(expression) -%}
    mode() within group (order by {{ expression }})
{%- endmacro %}

{% macro any_of_group(expression) -%}
    {#- any one value of a group whose rows all agree (PostgreSQL 15 has no any_value) -#}
    {{ return(adapter.dispatch('any_of_group', 'pacs2xnat')(expression)) }}
{%- endmacro %}
{% macro duckdb__any_of_group(expression) -%}
    any_value({{ expression }})
{%- endmacro %}
{% macro postgres__any_of_group(expression) -%}
    min({{ expression }})
{%- endmacro %}

{% macro first_per_group(relation, partition_by, order_by) -%}
    {#- One row per `partition_by` of `relation` (a CTE): the first in `order_by` order -#}
    {{ return(adapter.dispatch('first_per_group', 'pacs2xnat')(relation, partition_by, order_by)) }}
{%- endmacro %}
{% macro duckdb__first_per_group(relation, partition_by, order_by) -%}
    select *
    from {{ relation }}
    qualify row_number() over (
        partition by {{ partition_by }}
        order by {{ order_by }}
    ) = 1
{%- endmacro %}
{% macro postgres__first_per_group(relation, partition_by, order_by) -%}
    select distinct on ({{ partition_by }}) *
    from {{ relation }}
    order by {{ partition_by }}, {{ order_by }}
{%- endmacro %}

{% macro delimited_contains(delimited_list, value, delimiter='|') -%}
    {#- whether `value` is one of the items of a `delimiter`-joined list (portable SQL) -#}
    position(
        '{{ delimiter }}' || {{ value }} || '{{ delimiter }}'
        in '{{ delimiter }}' || {{ delimited_list }} || '{{ delimiter }}'
    ) > 0
{%- endmacro %}
