-- One row per session XNAT holds now, with its patient and its distance in days from the
-- patient's reference date: the points of the report's swimmer plot; with how many of its
-- instances pacs2xnat's latest attempt received as the PACS stores them, or converted.

with

sessions as (

    select * from {{ ref('int_xnat_sessions__linked_to_patients') }}

),

attempts as (

    select * from {{ ref('int_ingest_attempts__summarised_to_studies') }}

),

final as (

    select
        cast(sessions.session_id as varchar) as session_id,
        cast(sessions.nhs_number as varchar) as nhs_number,
        cast(sessions.mrn as varchar) as mrn,
        cast(sessions.session_label as varchar) as session_label,
        cast(sessions.study_instance_uid as varchar) as study_instance_uid,
        cast(sessions.modality as varchar) as modality,
        cast(sessions.study_date as date) as study_date,
        cast(sessions.study_quarter as varchar) as study_quarter,
        cast(sessions.reference_date as date) as reference_date,
        cast(sessions.days_from_reference as integer) as days_from_reference,
        cast(sessions.scan_count as integer) as scan_count,
        cast(attempts.latest_instances_as_stored as integer) as instances_as_stored,
        cast(attempts.latest_instances_converted as integer) as instances_converted,
        cast(attempts.latest_instances_lossy_converted as integer)
            as instances_lossy_converted
    from sessions
    left join attempts
        on sessions.study_instance_uid = attempts.study_instance_uid

)

select * from final
