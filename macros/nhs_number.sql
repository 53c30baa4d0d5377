{% macro nhs_number_is_valid(column) -%}
    {#- True for a 10-digit NHS number whose modulus-11 check digit is right, else false.
        Weights 10..2 on the first nine digits; check = 11 - (sum mod 11); 11 -> 0;
        10 can never match a digit, so such numbers are invalid as the standard says. -#}
    coalesce(
        case
            when {{ regex_full_match(column, '[0-9]{10}') }} then
                (
                    11 - (
                        (
                            {%- for i in range(1, 10) %}
                            cast(substr({{ column }}, {{ i }}, 1) as integer) * {{ 11 - i }}
                            {%- if not loop.last %} +{% endif %}
                            {%- endfor %}
                        ) % 11
                    )
                ) % 11 = cast(substr({{ column }}, 10, 1) as integer)
        end,
        false
    )
{%- endmacro %}
