-- Every study selected from PACS in any cycle (selected by today's rules, or ever attempted)
-- against what XNAT holds now, plus every XNAT session no selected study accounts for.
--   present      selected, and in XNAT (same Study UID; or same label where XNAT has no UID)
--   missing      selected, not in XNAT: failure_reason = the latest attempt's failure
--                category, 'loaded_not_in_sync' or 'not_yet_loaded'
--   uid_mismatch an XNAT session labelled like a selected study (accession / session label)
--                whose Study UID differs
--   unexpected   in XNAT, never selected: 'rules_changed' when PACS returned the study but
--                it is not selected now, 'duplicate_session' when another session already
--                holds that selected study, else 'not_from_pacs2xnat' (loaded by someone else)

with

selection as (

    select * from {{ ref('pacs_study_selection') }}

),

sessions as (

    select * from {{ ref('int_xnat_sessions__linked_to_patients') }}

),

latest_attempts as (

    select * from {{ ref('int_ingest_attempts__latest_per_study') }}

),

selected_studies as (

    select selection.*
    from selection
    left join latest_attempts
        on selection.study_instance_uid = latest_attempts.study_instance_uid
    where selection.selection_status = 'selected'
        or latest_attempts.study_instance_uid is not null

),

xnat_matches as (

    select * from {{ ref('int_pacs_studies__matched_to_xnat') }}

),

matches_of_selected_studies as (

    select xnat_matches.*
    from xnat_matches
    inner join selected_studies
        on xnat_matches.study_instance_uid = selected_studies.study_instance_uid

),

best_matches as (

    select
        study_instance_uid,
        xnat_session_id as session_id,
        xnat_match
    from matches_of_selected_studies
    where is_best_match

),

study_rows as (

    select
        selected_studies.study_instance_uid as reconciliation_key,
        case
            when sessions.session_id is null then 'missing'
            when best_matches.xnat_match = 'same_study' then 'present'
            else 'uid_mismatch'
        end as reconciliation_status,
        case
            when sessions.session_id is not null then null
            when latest_attempts.failure_reason is not null
                then latest_attempts.failure_reason
            when latest_attempts.latest_outcome is not null
                then 'loaded_not_in_sync'
            else 'not_yet_loaded'
        end as failure_reason,
        cast(null as varchar) as unexpected_reason,
        selected_studies.study_instance_uid,
        sessions.study_instance_uid as xnat_study_instance_uid,
        selected_studies.accession_number,
        coalesce(selected_studies.nhs_number, sessions.nhs_number) as nhs_number,
        coalesce(selected_studies.mrn, sessions.mrn) as mrn,
        selected_studies.session_label,
        selected_studies.study_date,
        selected_studies.modalities_in_study as modality,
        selected_studies.study_description,
        selected_studies.selection_status,
        latest_attempts.latest_outcome as latest_attempt_outcome,
        sessions.session_id as xnat_session_id,
        sessions.session_label as xnat_session_label,
        sessions.study_date as xnat_session_date
    from selected_studies
    left join best_matches
        on selected_studies.study_instance_uid = best_matches.study_instance_uid
    left join sessions
        on best_matches.session_id = sessions.session_id
    left join latest_attempts
        on selected_studies.study_instance_uid = latest_attempts.study_instance_uid

),

label_matched_sessions as (

    select distinct xnat_session_id as session_id
    from matches_of_selected_studies
    where match_rank > 1

),

session_rows as (

    select
        'xnat:' || sessions.session_id as reconciliation_key,
        case
            when label_matched_sessions.session_id is not null then 'uid_mismatch'
            else 'unexpected'
        end as reconciliation_status,
        cast(null as varchar) as failure_reason,
        case
            when label_matched_sessions.session_id is not null then null
            when selection.selection_status = 'selected' then 'duplicate_session'
            when selection.study_instance_uid is not null then 'rules_changed'
            else 'not_from_pacs2xnat'
        end as unexpected_reason,
        selection.study_instance_uid,
        sessions.study_instance_uid as xnat_study_instance_uid,
        selection.accession_number,
        sessions.nhs_number,
        sessions.mrn,
        selection.session_label,
        selection.study_date,
        sessions.modality,
        selection.study_description,
        selection.selection_status,
        cast(null as varchar) as latest_attempt_outcome,
        sessions.session_id as xnat_session_id,
        sessions.session_label as xnat_session_label,
        sessions.study_date as xnat_session_date
    from sessions
    left join best_matches
        on sessions.session_id = best_matches.session_id
    left join label_matched_sessions
        on sessions.session_id = label_matched_sessions.session_id
    left join selection
        on sessions.study_instance_uid = selection.study_instance_uid
    where best_matches.session_id is null

),

unioned as (

    select * from study_rows
    union all
    select * from session_rows

),

final as (

    select
        cast(reconciliation_key as varchar) as reconciliation_key,
        cast(reconciliation_status as varchar) as reconciliation_status,
        cast(failure_reason as varchar) as failure_reason,
        cast(unexpected_reason as varchar) as unexpected_reason,
        cast(nhs_number as varchar) as nhs_number,
        cast(mrn as varchar) as mrn,
        cast(study_instance_uid as varchar) as study_instance_uid,
        cast(xnat_study_instance_uid as varchar) as xnat_study_instance_uid,
        cast(accession_number as varchar) as accession_number,
        cast(session_label as varchar) as session_label,
        cast(study_date as date) as study_date,
        cast(modality as varchar) as modality,
        cast(study_description as varchar) as study_description,
        cast(selection_status as varchar) as selection_status,
        cast(latest_attempt_outcome as varchar) as latest_attempt_outcome,
        cast(xnat_session_id as varchar) as xnat_session_id,
        cast(xnat_session_label as varchar) as xnat_session_label,
        cast(xnat_session_date as date) as xnat_session_date
    from unioned

)

select * from final
