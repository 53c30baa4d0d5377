-- The failure register: one row per study whose latest ingest attempt failed and that is not
-- in XNAT now, cumulative across every run since the beginning, plus the studies held back
-- before any attempt (stage 'held_back'). Resolved rows stay (is_open false): the register's
-- history. `pacs2xnat failures` prints the open rows and retries the retryable ones.
-- Column order is the interface connectors/failures.py reads.

with

failures as (

    select * from {{ ref('int_ingest_failures__classified') }}

),

register as (

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
        is_retryable,
        stage,
        instances_as_stored,
        instances_converted,
        instances_lossy_converted
    from failures

)

select * from register
