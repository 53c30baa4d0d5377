-- What the admin and the clinical fellow decide on: one row per normalised study description
-- that is on neither rules list (unknown) or on both (conflict), over the studies of patients
-- not withdrawn, with how often and when it occurs and the rules behind a conflict.

with

selection as (

    select * from {{ ref('pacs_study_selection') }}

),

rules as (

    select * from {{ ref('int_study_description_rules__normalised') }}

),

undecided_studies as (

    select *
    from selection
    where
        description_decision in ('unknown', 'conflict')
        and not is_withdrawn

),

per_description as (

    select
        study_description_normalised,
        min(description_decision) as description_decision,
        {{ most_frequent('study_description') }}
            as example_study_description,
        cast(count(*) as integer) as number_of_studies,
        cast(count(distinct mrn) as integer) as number_of_patients,
        string_agg(
            distinct modalities_in_study, ', ' order by modalities_in_study
        ) as modalities,
        min(study_date) as first_study_date,
        max(study_date) as last_study_date
    from undecided_studies
    group by 1

),

triage as (

    select
        per_description.study_description_normalised,
        per_description.description_decision,
        per_description.example_study_description,
        per_description.number_of_studies,
        per_description.number_of_patients,
        per_description.modalities,
        per_description.first_study_date,
        per_description.last_study_date,
        rules.rule_decisions as conflicting_decisions
    from per_description
    left join rules
        on per_description.study_description_normalised = rules.description_normalised

)

select * from triage
