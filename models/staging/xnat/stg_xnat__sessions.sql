with

source as (

    select * from {{ source('xnat', 'sessions') }}

),

renamed as (

    select
        -- ids
        -- rows written before raw.xnat_syncs existed: their run was their snapshot
        coalesce(sync_id, run_id) as sync_id,
        run_id,
        session_id,
        nullif(trim(session_label), '') as session_label,
        subject_id,
        nullif(trim(subject_label), '') as subject_label,
        nullif(trim(study_instance_uid), '') as study_instance_uid,

        -- strings
        project,
        xsi_type,
        coalesce(
            nullif(upper(trim(modality)), ''),
            upper({{ regex_group("xsi_type", 'xnat:([a-z]+)SessionData') }})
        ) as modality,

        -- numerics
        scan_count,

        -- dates
        {{ try_cast_as("nullif(trim(session_date), '')", 'date') }} as session_date,

        -- timestamps
        {{ try_cast_as("nullif(trim(insert_date), '')", 'timestamp') }} as inserted_at,
        synced_at,
        loaded_at

    from source

)

select * from renamed
