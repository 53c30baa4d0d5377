-- One row per study pacs2xnat ever tried to put into XNAT, cumulative across every run since
-- the beginning: how many attempts, how many failed, the first and last failure, and what the
-- latest attempt ended with (the latest attempt wins: a study that failed and later loaded is
-- no failure any more).

with

ingest_attempts as (

    select * from {{ ref('stg_pipeline__ingest_attempts') }}

),

ranked as (

    select
        *,
        row_number() over (
            partition by study_instance_uid
            order by finished_at desc, attempted_at desc, loaded_at desc, attempt_id desc
        ) as recency
    from ingest_attempts

),

per_study as (

    select
        study_instance_uid,
        count(*) as attempts,
        count(*) filter (where outcome = 'failed') as failed_attempts,
        min(attempted_at) as first_attempted_at,
        max(attempted_at) as last_attempted_at,
        min(finished_at) filter (where outcome = 'failed') as first_failed_at,
        max(finished_at) filter (where outcome = 'failed') as last_failed_at
    from ingest_attempts
    group by 1

),

latest as (

    select
        study_instance_uid,
        accession_number,
        nhs_number,
        subject_label,
        session_label,
        run_id as latest_run_id,
        outcome as latest_outcome,
        reason_category as latest_reason_category,
        message as latest_message,
        finished_at as latest_finished_at,
        instances_as_stored as latest_instances_as_stored,
        instances_converted as latest_instances_converted,
        instances_lossy_converted as latest_instances_lossy_converted
    from ranked
    where recency = 1

),

summarised as (

    select
        latest.study_instance_uid,
        latest.accession_number,
        latest.nhs_number,
        latest.subject_label,
        latest.session_label,
        per_study.attempts,
        per_study.failed_attempts,
        per_study.first_attempted_at,
        per_study.last_attempted_at,
        per_study.first_failed_at,
        per_study.last_failed_at,
        latest.latest_run_id,
        latest.latest_outcome,
        latest.latest_reason_category,
        latest.latest_message,
        latest.latest_finished_at,
        latest.latest_instances_as_stored,
        latest.latest_instances_converted,
        latest.latest_instances_lossy_converted,
        latest.latest_outcome = 'failed' as is_latest_failed
    from latest
    inner join per_study
        on latest.study_instance_uid = per_study.study_instance_uid

)

select * from summarised
