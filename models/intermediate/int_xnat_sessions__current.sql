-- What the XNAT project holds now: the sessions of the latest successful `pacs2xnat sync`
-- (each sync is a full snapshot). Empty until a sync has succeeded.

with

xnat_sessions as (

    select * from {{ ref('stg_xnat__sessions') }}

),

runs as (

    select * from {{ ref('stg_pipeline__runs') }}

),

latest_successful_sync as (

    select run_id
    from runs
    where command = 'sync' and outcome = 'success'
    order by started_at desc, run_id desc
    limit 1

),

current_sessions as (

    select xnat_sessions.*
    from xnat_sessions
    inner join latest_successful_sync
        on xnat_sessions.run_id = latest_successful_sync.run_id

)

select * from current_sessions
