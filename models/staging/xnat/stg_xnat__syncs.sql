with

source as (

    select * from {{ source('xnat', 'syncs') }}

),

renamed as (

    select
        -- ids
        sync_id,
        run_id,

        -- strings
        project,

        -- numerics
        sessions as number_of_sessions,
        subjects as number_of_subjects,

        -- timestamps
        started_at,
        finished_at,
        loaded_at

    from source

)

select * from renamed
