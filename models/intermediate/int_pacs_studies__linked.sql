-- Step 3 of the cycle, per study: the master-list MRN it belongs to (PACS Patient ID, else the
-- MRN we queried for), the NHS number and link status of that MRN, whether the patient is
-- withdrawn, and whether the PACS name or birth date disagree with the list (compared only
-- where both sides have a value; flagged, not held back).

with

studies as (

    select * from {{ ref('int_pacs_studies__deduplicated') }}

),

patients as (

    select * from {{ ref('int_master_patients__by_mrn') }}

),

matched as (

    select
        studies.study_instance_uid,
        studies.patient_id,
        studies.query_mrn,
        studies.patient_name_normalised,
        studies.patient_birth_date,
        coalesce(by_patient_id.mrn_key, by_query_mrn.mrn_key) as mrn_key
    from studies
    left join patients as by_patient_id
        on upper(trim(studies.patient_id)) = by_patient_id.mrn_key
    left join patients as by_query_mrn
        on upper(trim(studies.query_mrn)) = by_query_mrn.mrn_key

),

linked as (

    select
        matched.study_instance_uid,
        coalesce(patients.mrn, matched.patient_id, matched.query_mrn) as mrn,
        patients.nhs_number,
        coalesce(patients.link_status, 'not_on_master_list') as link_status,
        case
            when patients.link_status = 'linked' then patients.nhs_number
        end as subject_label,
        coalesce(patients.is_withdrawn, false) as is_withdrawn,
        coalesce(
            matched.patient_name_normalised is not null
            and patients.list_names is not null
            and not {{ delimited_contains(
                'patients.list_names', 'matched.patient_name_normalised'
            ) }},
            false
        ) as has_name_mismatch,
        coalesce(
            matched.patient_birth_date is not null
            and patients.list_birth_dates is not null
            and not {{ delimited_contains(
                'patients.list_birth_dates',
                'cast(matched.patient_birth_date as varchar)'
            ) }},
            false
        ) as has_birth_date_mismatch,
        coalesce(patients.number_of_mrns_for_nhs_number, 0) > 1 as is_merged_record
    from matched
    left join patients
        on matched.mrn_key = patients.mrn_key

)

select
    *,
    has_name_mismatch or has_birth_date_mismatch as has_identity_mismatch
from linked
