-- One row per session XNAT holds now, with its patient and its distance in days from the
-- patient's reference date: the points of the report's swimmer plot.

with

sessions as (

    select * from {{ ref('int_xnat_sessions__linked_to_patients') }}

),

final as (

    select
        cast(session_id as varchar) as session_id,
        cast(nhs_number as varchar) as nhs_number,
        cast(mrn as varchar) as mrn,
        cast(session_label as varchar) as session_label,
        cast(study_instance_uid as varchar) as study_instance_uid,
        cast(modality as varchar) as modality,
        cast(study_date as date) as study_date,
        cast(study_quarter as varchar) as study_quarter,
        cast(reference_date as date) as reference_date,
        cast(days_from_reference as integer) as days_from_reference,
        cast(scan_count as integer) as scan_count
    from sessions

)

select * from final
