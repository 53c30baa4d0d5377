-- The studies to load into XNAT: selected, linked, and not in the project as of the latest
-- successful sync (matched by Study Instance UID, or by subject and session label).
-- Column order is the interface connectors/load.py and connectors/export.py read.

with

selection as (

    select * from {{ ref('pacs_study_selection') }}

),

xnat_sessions as (

    select * from {{ ref('int_xnat_sessions__current') }}

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
        selected.number_of_study_related_instances
    from selected
    where
        not exists (
            select 1
            from xnat_sessions
            where
                xnat_sessions.study_instance_uid = selected.study_instance_uid
                or (
                    xnat_sessions.subject_label = selected.subject_label
                    and xnat_sessions.session_label = selected.session_label
                )
        )

)

select * from not_in_xnat
