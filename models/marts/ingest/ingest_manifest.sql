-- The studies to load into XNAT: selected, linked, and not in the project as of the latest
-- complete sync (int_pacs_studies__matched_to_xnat decides). A study whose session label XNAT
-- already gives another study stays, with ingest_action 'xnat_conflict': the loader records
-- the conflict instead of retrieving it. Attempt failures that are not retryable (permanent
-- and unresolved, or resolved as anything but 'retry') are not sent again:
-- int_ingest_failures__classified decides.
-- Column order is the interface connectors/load and connectors/outputs/export.py read.

with

selection as (

    select * from {{ ref('pacs_study_selection') }}

),

xnat_matches as (

    select * from {{ ref('int_pacs_studies__matched_to_xnat') }}

),

failures as (

    select * from {{ ref('int_ingest_failures__classified') }}

),

best_matches as (

    select *
    from xnat_matches
    where is_best_match

),

not_to_send_again as (

    select failures.study_instance_uid
    from failures
    where failures.stage = 'attempt' and not failures.is_retryable

),

selected as (

    select *
    from selection
    where selection_status = 'selected'

),

not_in_xnat as (

    select
        selected.accession_number,
        selected.patient_id,
        selected.study_date,
        selected.study_description,
        selected.study_instance_uid,
        selected.nhs_number,
        selected.subject_label,
        selected.session_label,
        selected.mrn,
        selected.modalities_in_study,
        selected.number_of_study_related_instances,
        case
            when best_matches.xnat_match = 'label_held_by_other_study' then 'xnat_conflict'
            else 'load'
        end as ingest_action,
        case
            when best_matches.xnat_match = 'label_held_by_other_study'
                then best_matches.xnat_session_id
        end as xnat_session_id
    from selected
    left join best_matches
        on selected.study_instance_uid = best_matches.study_instance_uid
    where
        best_matches.xnat_match is distinct from 'same_study'
        and not exists (
            select 1
            from not_to_send_again
            where not_to_send_again.study_instance_uid = selected.study_instance_uid
        )

)

select * from not_in_xnat
