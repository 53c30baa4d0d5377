-- The studies to load into XNAT: selected, linked, and not in the project as of the latest
-- successful sync (matched by Study Instance UID, or by subject and session label).
-- Attempt failures that are not retryable (permanent and unresolved, or resolved as anything
-- but 'retry') are not sent again: int_ingest_failures__classified decides.
-- Column order is the interface connectors/load.py and connectors/export.py read.

with

selection as (

    select * from {{ ref('pacs_study_selection') }}

),

xnat_sessions as (

    select * from {{ ref('int_xnat_sessions__current') }}

),

failures as (

    select * from {{ ref('int_ingest_failures__classified') }}

),

not_to_send_again as (

    select failures.study_instance_uid
    from failures
    where failures.stage = 'attempt' and not failures.is_retryable

),

selected as (

    select *
    from selection
    where selection_status = 'selected'

),

not_in_xnat as (

    select
        selected.accession_number,
        selected.patient_id,
        selected.study_date,
        selected.study_description,
        selected.study_instance_uid,
        selected.nhs_number,
        selected.subject_label,
        selected.session_label,
        selected.mrn,
        selected.modalities_in_study,
        selected.number_of_study_related_instances
    from selected
    where
        -- two anti-joins rather than one with "or": each stays a hash join at scale
        not exists (
            select 1
            from xnat_sessions
            where xnat_sessions.study_instance_uid = selected.study_instance_uid
        )
        and not exists (
            select 1
            from xnat_sessions
            where
                xnat_sessions.subject_label = selected.subject_label
                and xnat_sessions.session_label = selected.session_label
        )
        and not exists (
            select 1
            from not_to_send_again
            where not_to_send_again.study_instance_uid = selected.study_instance_uid
        )

)

select * from not_in_xnat
