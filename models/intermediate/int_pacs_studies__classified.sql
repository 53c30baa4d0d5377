-- Step 2 of the cycle, per study: what the include/exclude rules say about its description
-- (include / exclude / conflict; unknown when on neither list) and whether it is set aside
-- (placeholder or future date, no images on PACS, no accession number), first reason wins.

with

studies as (

    select * from {{ ref('int_pacs_studies__deduplicated') }}

),

rules as (

    select * from {{ ref('int_study_description_rules__normalised') }}

),

classified as (

    select
        studies.study_instance_uid,
        coalesce(rules.description_decision, 'unknown') as description_decision,
        rules.rule_decisions,
        case
            when
                studies.study_date is null
                or studies.study_date
                < cast('{{ var("earliest_plausible_study_date") }}' as date)
                then 'placeholder_date'
            when studies.study_date > {{ pacs2xnat_today() }}
                then 'future_date'
            when studies.number_of_study_related_instances = 0
                then 'no_images_on_pacs'
            when studies.accession_number is null
                then 'no_accession_number'
        end as set_aside_reason
    from studies
    left join rules
        on studies.study_description_normalised = rules.description_normalised

)

select * from classified
