-- Every Study Instance UID PACS ever returned has exactly one selection row, and nothing else
-- does. Returns the UIDs missing on either side.

with

seen as (

    select distinct study_instance_uid
    from {{ ref('stg_pacs__studies') }}

),

selected as (

    select study_instance_uid
    from {{ ref('pacs_study_selection') }}

)

select
    coalesce(seen.study_instance_uid, selected.study_instance_uid) as study_instance_uid
from seen
full outer join selected
    on seen.study_instance_uid = selected.study_instance_uid
where seen.study_instance_uid is null or selected.study_instance_uid is null
