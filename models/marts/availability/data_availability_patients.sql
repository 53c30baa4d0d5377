-- One row per patient of data_availability: the report's patient table (what XNAT holds of
-- each patient over all modalities), so the page counts nothing itself.

with

availability as (

    select * from {{ ref('data_availability') }}

),

per_patient as (

    select
        nhs_number,
        min(mrn) as mrn,
        min(patient_status) as patient_status,
        bool_or(is_on_master_list) as is_on_master_list,
        min(reference_date) as reference_date,
        sum(number_of_studies) as number_of_studies,
        string_agg(
            case
                when number_of_studies > 0
                    then modality || ' ' || cast(number_of_studies as varchar)
            end,
            ', '
            order by modality
        ) as modalities,
        min(first_study_date) as first_study_date,
        max(last_study_date) as last_study_date,
        min(days_from_reference_to_first) as days_from_reference_to_first,
        max(days_from_reference_to_last) as days_from_reference_to_last,
        sum(
            case when number_of_studies > 0 then studies_before_reference end
        ) as studies_before_reference,
        sum(
            case when number_of_studies > 0 then studies_on_or_after_reference end
        ) as studies_on_or_after_reference
    from availability
    group by 1

),

final as (

    select
        cast(nhs_number as varchar) as nhs_number,
        cast(mrn as varchar) as mrn,
        cast(patient_status as varchar) as patient_status,
        cast(is_on_master_list as boolean) as is_on_master_list,
        cast(reference_date as date) as reference_date,
        cast(number_of_studies as integer) as number_of_studies,
        cast(coalesce(modalities, '') as varchar) as modalities,
        cast(first_study_date as date) as first_study_date,
        cast(last_study_date as date) as last_study_date,
        cast(days_from_reference_to_first as integer) as days_from_reference_to_first,
        cast(days_from_reference_to_last as integer) as days_from_reference_to_last,
        cast(studies_before_reference as integer) as studies_before_reference,
        cast(studies_on_or_after_reference as integer) as studies_on_or_after_reference
    from per_patient

)

select * from final
