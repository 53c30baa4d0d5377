-- One row per normalised study description on the rules seed, with the decision the team
-- took: a description put on both lists (in any spelling that normalises the same) is a
-- conflict, never silently resolved.

with

study_description_rules as (

    select * from {{ ref('study_description_rules') }}

),

rules_normalised as (

    select
        {{ normalise_description('description') }} as description_normalised,
        description,
        lower(trim(decision)) as decision
    from study_description_rules

),

decisions_per_description as (

    select
        description_normalised,
        case
            when count(distinct decision) > 1 then 'conflict'
            else min(decision)
        end as description_decision,
        string_agg(
            distinct decision || ': ' || description, '; '
            order by decision || ': ' || description
        ) as rule_decisions,
        count(*) as number_of_rules
    from rules_normalised
    where description_normalised is not null
    group by 1

)

select * from decisions_per_description
