with

source as (

    select * from {{ source('pipeline', 'runs') }}

),

renamed as (

    select
        -- ids
        run_id,

        -- strings
        command,
        arguments,
        user_name,
        host_name,
        tool_version,
        config_path,
        input_files,
        rules_sha256,
        outcome,
        summary,

        -- numerics
        exit_code,

        -- booleans
        outcome in ('success', 'partial') as is_finished,

        -- timestamps
        started_at,
        finished_at,
        loaded_at

    from source

)

select * from renamed
