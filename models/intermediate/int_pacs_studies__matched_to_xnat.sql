-- "Is this study already in XNAT?", decided once, the way XNAT keys sessions: by session label
-- within the project (any subject), and by Study Instance UID. One row per (study, session of
-- the current snapshot) that could be the same study; is_best_match marks the one each study
-- is matched to (UID first, then session label, then accession number = label).
--   same_study                     same UID, or a matching label on a session without a UID
--   label_held_by_other_study      our session label is taken by a session of another UID:
--                                  loading would collide (ingest_manifest: xnat_conflict)
--   accession_held_by_other_study  XNAT has our raw accession number as a label, other UID

with

selection as (

    select * from {{ ref('pacs_study_selection') }}

),

xnat_sessions as (

    select * from {{ ref('int_xnat_sessions__current') }}

),

-- three equi-joins rather than one join on "a or b or c": each stays a hash join at scale
candidates as (

    select
        selection.study_instance_uid,
        xnat_sessions.session_id,
        xnat_sessions.session_label as xnat_session_label,
        xnat_sessions.study_instance_uid as xnat_study_instance_uid,
        1 as match_rank
    from selection
    inner join xnat_sessions
        on selection.study_instance_uid = xnat_sessions.study_instance_uid

    union all

    select
        selection.study_instance_uid,
        xnat_sessions.session_id,
        xnat_sessions.session_label as xnat_session_label,
        xnat_sessions.study_instance_uid as xnat_study_instance_uid,
        2 as match_rank
    from selection
    inner join xnat_sessions
        on selection.session_label = xnat_sessions.session_label
    where
        xnat_sessions.study_instance_uid is distinct from selection.study_instance_uid

    union all

    select
        selection.study_instance_uid,
        xnat_sessions.session_id,
        xnat_sessions.session_label as xnat_session_label,
        xnat_sessions.study_instance_uid as xnat_study_instance_uid,
        3 as match_rank
    from selection
    inner join xnat_sessions
        on selection.accession_number = xnat_sessions.session_label
    where
        xnat_sessions.study_instance_uid is distinct from selection.study_instance_uid
        and xnat_sessions.session_label is distinct from selection.session_label

),

ranked as (

    select
        candidates.*,
        row_number() over (
            partition by candidates.study_instance_uid
            order by candidates.match_rank, candidates.session_id
        ) = 1 as is_best_match
    from candidates

),

matched as (

    select
        -- ids
        study_instance_uid,
        session_id as xnat_session_id,
        xnat_session_label,
        xnat_study_instance_uid,

        -- strings
        case
            when match_rank = 1 or xnat_study_instance_uid is null then 'same_study'
            when match_rank = 2 then 'label_held_by_other_study'
            else 'accession_held_by_other_study'
        end as xnat_match,

        -- numerics
        match_rank,

        -- booleans
        is_best_match

    from ranked

)

select * from matched
