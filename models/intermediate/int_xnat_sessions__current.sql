-- What the XNAT project holds now: the sessions of the latest complete snapshot (the newest
-- stg_xnat__syncs row; each sync is a full snapshot). Empty until a sync has completed.

with

xnat_sessions as (

    select * from {{ ref('stg_xnat__sessions') }}

),

syncs as (

    select * from {{ ref('stg_xnat__syncs') }}

),

latest_complete_sync as (

    select sync_id
    from syncs
    order by finished_at desc, sync_id desc
    limit 1

),

current_sessions as (

    select xnat_sessions.*
    from xnat_sessions
    inner join latest_complete_sync
        on xnat_sessions.sync_id = latest_complete_sync.sync_id

)

select * from current_sessions
