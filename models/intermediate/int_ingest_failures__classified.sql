-- Every study that is not in XNAT and did not get there: those whose latest ingest attempt
-- failed (stage 'attempt', cumulative across every run since the beginning) and those held
-- back before any attempt (stage 'held_back': unlinked, placeholder date, no images on PACS).
-- With the admin's latest resolution, and the two decisions the tool acts on:
--   is_open      = no resolution, or a 'retry' resolution (spent or not: a retried study
--                  that failed again waits for a new decision);
--   is_retryable = open, an attempt failure, and (a transient reason, or a 'retry' decided
--                  after the latest attempt: decided_on on or after the latest attempt's day).
-- ingest_manifest leaves out every attempt failure that is not retryable.

with

attempted as (

    select * from {{ ref('int_ingest_attempts__summarised_to_studies') }}

),

resolutions as (

    select * from {{ ref('int_failure_resolutions__latest') }}

),

selection as (

    select * from {{ ref('pacs_study_selection') }}

),

xnat_matches as (

    select * from {{ ref('int_pacs_studies__matched_to_xnat') }}

),

reasons as (

    select * from {{ ref('failure_reasons') }}

),

attempt_failures as (

    select
        'attempt' as stage,
        attempted.study_instance_uid,
        attempted.accession_number,
        attempted.nhs_number,
        attempted.subject_label,
        attempted.session_label,
        attempted.first_failed_at,
        attempted.last_failed_at,
        attempted.attempts,
        attempted.failed_attempts,
        attempted.latest_reason_category as reason_category,
        attempted.latest_message as last_message,
        attempted.last_attempted_at,
        attempted.latest_instances_as_stored as instances_as_stored,
        attempted.latest_instances_converted as instances_converted,
        attempted.latest_instances_lossy_converted as instances_lossy_converted
    from attempted
    where attempted.is_latest_failed

),

held_back as (

    select
        'held_back' as stage,
        selection.study_instance_uid,
        selection.accession_number,
        selection.nhs_number,
        selection.subject_label,
        selection.session_label,
        selection.first_queried_at as first_failed_at,
        selection.last_queried_at as last_failed_at,
        0 as attempts,
        0 as failed_attempts,
        case
            when selection.selection_status = 'unlinked' then 'unlinked'
            when
                selection.set_aside_reason in ('placeholder_date', 'future_date')
                then 'placeholder_date'
            when selection.set_aside_reason = 'no_images_on_pacs' then 'no_images_on_pacs'
            else 'other'
        end as reason_category,
        case
            when selection.selection_status = 'unlinked'
                then 'held back: ' || selection.link_status
            else 'held back: ' || selection.set_aside_reason
        end as last_message,
        cast(null as timestamp) as last_attempted_at,
        cast(null as integer) as instances_as_stored,
        cast(null as integer) as instances_converted,
        cast(null as integer) as instances_lossy_converted
    from selection
    where
        selection.selection_status in ('unlinked', 'set_aside')
        and selection.study_instance_uid not in (
            select attempted.study_instance_uid from attempted
        )

),

failures as (

    select * from attempt_failures
    union all
    select * from held_back

),

not_in_xnat as (

    -- in XNAT is int_pacs_studies__matched_to_xnat's 'same_study'; a label held by another
    -- study is a conflict, not a presence
    select failures.*
    from failures
    where
        not exists (
            select 1
            from xnat_matches
            where
                xnat_matches.study_instance_uid = failures.study_instance_uid
                and xnat_matches.is_best_match
                and xnat_matches.xnat_match = 'same_study'
        )

),

classified as (

    select
        not_in_xnat.study_instance_uid,
        not_in_xnat.accession_number,
        not_in_xnat.nhs_number,
        not_in_xnat.subject_label,
        not_in_xnat.session_label,
        not_in_xnat.first_failed_at,
        not_in_xnat.last_failed_at,
        not_in_xnat.attempts,
        not_in_xnat.failed_attempts,
        not_in_xnat.reason_category,
        coalesce(reasons.is_transient, false) as is_transient,
        not_in_xnat.last_message,
        resolutions.resolution_outcome,
        resolutions.resolution_note,
        resolutions.resolved_on,
        resolutions.resolved_by,
        resolutions.resolution_outcome is null
        or resolutions.resolution_outcome = 'retry' as is_open,
        resolutions.resolution_outcome = 'retry'
        and (
            not_in_xnat.last_attempted_at is null
            or resolutions.resolved_on >= cast(not_in_xnat.last_attempted_at as date)
        ) as is_retry_pending,
        not_in_xnat.stage,
        not_in_xnat.instances_as_stored,
        not_in_xnat.instances_converted,
        not_in_xnat.instances_lossy_converted
    from not_in_xnat
    left join reasons
        on not_in_xnat.reason_category = reasons.reason_category
    left join resolutions
        on not_in_xnat.study_instance_uid = resolutions.study_instance_uid

),

decided as (

    select
        study_instance_uid,
        accession_number,
        nhs_number,
        subject_label,
        session_label,
        first_failed_at,
        last_failed_at,
        attempts,
        failed_attempts,
        reason_category,
        is_transient,
        last_message,
        resolution_outcome,
        resolution_note,
        resolved_on,
        resolved_by,
        is_open,
        coalesce(
            is_open
            and stage = 'attempt'
            and (is_transient or coalesce(is_retry_pending, false)),
            false
        ) as is_retryable,
        stage,
        instances_as_stored,
        instances_converted,
        instances_lossy_converted
    from classified

)

select * from decided
