-- The latest load attempt of each study and, when that attempt failed, its reason category.
-- The one place `reconciliation` takes "why is it missing" from: swap it for the failure
-- register once that mart exists.

with

ingest_attempts as (

    select * from {{ ref('stg_pipeline__ingest_attempts') }}

),

counted as (

    select
        *,
        count(*) over (partition by study_instance_uid) as number_of_attempts
    from ingest_attempts

),

latest as (

    {{ first_per_group(
        'counted',
        'study_instance_uid',
        'attempted_at desc, finished_at desc, attempt_id desc'
    ) }}

),

numbered as (

    select
        study_instance_uid,
        outcome as latest_outcome,
        case
            when outcome = 'failed' then coalesce(reason_category, 'unknown')
        end as failure_reason,
        attempted_at as latest_attempted_at,
        number_of_attempts
    from latest

)

select * from numbered
