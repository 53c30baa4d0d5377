with

source as (

    select * from {{ source('pacs', 'queries') }}

),

renamed as (

    select
        -- ids
        query_id,
        run_id,
        trim(mrn) as mrn,

        -- strings
        outcome,
        status_code,
        message,

        -- numerics
        studies_found,
        sub_queries,

        -- booleans
        outcome = 'success' as is_success,

        -- dates
        window_from,
        window_to,

        -- timestamps
        started_at,
        finished_at,
        loaded_at

    from source

)

select * from renamed
