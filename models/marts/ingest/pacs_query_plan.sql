-- The query plan the PACS connector reads (`pacs2xnat query`): one row per active patient.

with

query_plan as (

    select * from {{ ref('int_patients__query_plan') }}

),

final as (

    select
        cast(mrn as varchar) as mrn,
        cast(stream as varchar) as stream,
        cast(window_from as date) as window_from,
        cast(window_to as date) as window_to,
        cast(last_window_to as date) as last_window_to,
        cast(last_queried_at as timestamp) as last_queried_at,
        cast(is_due as boolean) as is_due
    from query_plan

)

select * from final
