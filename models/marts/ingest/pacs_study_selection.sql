-- One row per distinct study PACS has returned (latest observation), with every decision of
-- steps 2 and 3 and the one selection status that follows from them. Precedence:
-- withdrawn > excluded > conflict > unknown > set_aside > unlinked > selected.

with

studies as (

    select * from {{ ref('int_pacs_studies__deduplicated') }}

),

classified as (

    select * from {{ ref('int_pacs_studies__classified') }}

),

linked as (

    select * from {{ ref('int_pacs_studies__linked') }}

),

selection as (

    select
        studies.study_instance_uid,
        studies.accession_number,
        studies.patient_id,
        linked.mrn,
        linked.nhs_number,
        linked.subject_label,
        {{ xnat_label('studies.accession_number') }} as session_label,
        studies.study_date,
        studies.study_time,
        studies.study_description,
        studies.study_description_normalised,
        studies.modalities_in_study,
        studies.number_of_study_related_instances,
        classified.description_decision,
        classified.set_aside_reason,
        linked.link_status,
        linked.is_withdrawn,
        linked.has_identity_mismatch,
        case
            when linked.is_withdrawn then 'withdrawn'
            when classified.description_decision = 'exclude' then 'excluded'
            when classified.description_decision = 'conflict' then 'conflict'
            when classified.description_decision = 'unknown' then 'unknown'
            when classified.set_aside_reason is not null then 'set_aside'
            when linked.link_status <> 'linked' then 'unlinked'
            else 'selected'
        end as selection_status,
        studies.first_queried_at,
        studies.last_queried_at
    from studies
    inner join classified
        on studies.study_instance_uid = classified.study_instance_uid
    inner join linked
        on studies.study_instance_uid = linked.study_instance_uid

)

select * from selection
