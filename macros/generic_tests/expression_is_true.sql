{#- No dbt hub here: our own copy of dbt_utils' test. Fails with the rows where it is false. -#}
{% test expression_is_true(model, expression) %}

select *
from {{ model }}
where not coalesce(({{ expression }}), false)

{% endtest %}
