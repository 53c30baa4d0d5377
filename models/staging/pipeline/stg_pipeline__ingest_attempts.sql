with

source as (

    select * from {{ source('pipeline', 'ingest_attempts') }}

),

renamed as (

    select
        -- ids
        attempt_id,
        run_id,
        trim(study_instance_uid) as study_instance_uid,
        nullif(trim(accession_number), '') as accession_number,
        nullif(trim(nhs_number), '') as nhs_number,
        subject_label,
        session_label,
        xnat_session_id,

        -- strings
        mode,
        retrieve_method,
        outcome,
        nullif(trim(reason_category), '') as reason_category,
        message,

        -- numerics
        files_expected,
        files_received,
        files_archived,
        bytes_transferred,
        instances_as_stored,
        instances_converted,
        instances_lossy_converted,

        -- booleans
        outcome in ('loaded', 'already_present') as is_in_xnat,

        -- timestamps
        started_at as attempted_at,
        finished_at,
        loaded_at

    from source

)

select * from renamed
