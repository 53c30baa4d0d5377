-- The admin's latest decision on each study's failure (seeds/failure_resolutions.csv), matched
-- to the study by Study Instance UID or by accession number, whichever the admin wrote; the
-- latest decided_on wins (on the same day, a match by Study UID beats one by accession).

with

resolutions as (

    select * from {{ ref('failure_resolutions') }}

),

attempted as (

    select * from {{ ref('int_ingest_attempts__summarised_to_studies') }}

),

selection as (

    select * from {{ ref('pacs_study_selection') }}

),

resolutions_cleaned as (

    select
        nullif(trim(study_instance_uid), '') as study_instance_uid,
        nullif(trim(accession_number), '') as accession_number,
        lower(trim(outcome)) as resolution_outcome,
        nullif(trim(note), '') as resolution_note,
        decided_on as resolved_on,
        nullif(trim(decided_by), '') as resolved_by
    from resolutions

),

studies as (

    select study_instance_uid, accession_number from attempted
    union
    select study_instance_uid, accession_number from selection

),

matched as (

    select
        studies.study_instance_uid,
        studies.accession_number,
        resolutions_cleaned.resolution_outcome,
        resolutions_cleaned.resolution_note,
        resolutions_cleaned.resolved_on,
        resolutions_cleaned.resolved_by,
        case
            when resolutions_cleaned.study_instance_uid = studies.study_instance_uid
                then 'study_instance_uid'
            else 'accession_number'
        end as matched_by
    from studies
    inner join resolutions_cleaned
        on
            resolutions_cleaned.study_instance_uid = studies.study_instance_uid
            or resolutions_cleaned.accession_number = studies.accession_number

),

latest as (

    {{ first_per_group(
        'matched',
        'study_instance_uid',
        "resolved_on desc nulls last, matched_by = 'study_instance_uid' desc,"
        ~ " resolution_outcome"
    ) }}

)

select * from latest
