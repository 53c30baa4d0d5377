-- Per patient (NHS number, MRN) and modality: what XNAT holds now, when, and how far from the
-- patient's reference date. Patients of the current master list with nothing in XNAT get one
-- row with modality null and zero studies, so the gaps show too.

with

sessions as (

    select * from {{ ref('int_xnat_sessions__linked_to_patients') }}

),

master_patients as (

    select * from {{ ref('int_master_patients__current') }}

),

per_patient_modality as (

    select
        nhs_number,
        modality,
        {{ any_of_group('mrn') }} as mrn,
        {{ any_of_group('patient_status') }} as patient_status,
        {{ any_of_group('reference_date') }} as reference_date,
        count(*) as number_of_studies,
        coalesce(sum(scan_count), 0) as number_of_scans,
        min(study_date) as first_study_date,
        max(study_date) as last_study_date,
        min(days_from_reference) as days_from_reference_to_first,
        max(days_from_reference) as days_from_reference_to_last,
        count(*) filter (where days_from_reference < 0)
            as studies_before_reference,
        count(*) filter (where days_from_reference >= 0)
            as studies_on_or_after_reference,
        count(*) filter (where study_date is null) as studies_without_date,
        bool_or(is_on_master_list) as is_on_master_list
    from sessions
    group by 1, 2

),

patients_without_sessions as (

    select
        master_patients.nhs_number,
        cast(null as varchar) as modality,
        string_agg(
            distinct master_patients.mrn, ', ' order by master_patients.mrn
        ) as mrn,
        case
            when bool_or(master_patients.patient_status = 'active') then 'active'
            else min(master_patients.patient_status)
        end as patient_status,
        min(master_patients.reference_date) as reference_date,
        0 as number_of_studies,
        0 as number_of_scans,
        cast(null as date) as first_study_date,
        cast(null as date) as last_study_date,
        cast(null as integer) as days_from_reference_to_first,
        cast(null as integer) as days_from_reference_to_last,
        0 as studies_before_reference,
        0 as studies_on_or_after_reference,
        0 as studies_without_date,
        true as is_on_master_list
    from master_patients
    left join sessions
        on master_patients.nhs_number = sessions.nhs_number
    where master_patients.nhs_number is not null
        and sessions.nhs_number is null
    group by 1

),

unioned as (

    -- by column name, in both warehouses (PostgreSQL has no "union all by name")
    {%- set columns = [
        'nhs_number', 'mrn', 'modality', 'patient_status', 'is_on_master_list',
        'reference_date', 'number_of_studies', 'number_of_scans', 'first_study_date',
        'last_study_date', 'days_from_reference_to_first', 'days_from_reference_to_last',
        'studies_before_reference', 'studies_on_or_after_reference', 'studies_without_date',
    ] %}
    select {{ columns | join(', ') }} from per_patient_modality
    union all
    select {{ columns | join(', ') }} from patients_without_sessions

),

final as (

    select
        cast(nhs_number as varchar) as nhs_number,
        cast(mrn as varchar) as mrn,
        cast(modality as varchar) as modality,
        cast(patient_status as varchar) as patient_status,
        cast(is_on_master_list as boolean) as is_on_master_list,
        cast(reference_date as date) as reference_date,
        cast(number_of_studies as integer) as number_of_studies,
        cast(number_of_scans as integer) as number_of_scans,
        cast(first_study_date as date) as first_study_date,
        cast(last_study_date as date) as last_study_date,
        cast(days_from_reference_to_first as integer)
            as days_from_reference_to_first,
        cast(days_from_reference_to_last as integer)
            as days_from_reference_to_last,
        -- null when the patient has no reference date: before/after is unknown
        cast(
            case when reference_date is not null then studies_before_reference end
            as integer
        ) as studies_before_reference,
        cast(
            case
                when reference_date is not null
                    then studies_on_or_after_reference
            end as integer
        ) as studies_on_or_after_reference,
        cast(studies_without_date as integer) as studies_without_date
    from unioned

)

select * from final
