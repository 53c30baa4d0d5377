with

source as (

    select * from {{ source('pacs', 'studies') }}

),

renamed as (

    select
        -- ids
        run_id,
        query_id,
        {{ dicom_string('study_instance_uid') }} as study_instance_uid,
        {{ dicom_string('accession_number') }} as accession_number,
        {{ dicom_string('patient_id') }} as patient_id,
        trim(query_mrn) as query_mrn,

        -- strings
        {{ dicom_string('study_description') }} as study_description,
        {{ normalise_description('study_description') }} as study_description_normalised,
        {{ dicom_person_name('patient_name') }} as patient_name,
        {{ normalise_person_name(dicom_person_name('patient_name')) }}
            as patient_name_normalised,
        {{ dicom_string('specific_character_set') }} as specific_character_set,
        nullif(
            array_to_string({{ dicom_code_list('modalities_in_study') }}, '/'), ''
        ) as modalities_in_study,

        -- numerics
        {{ try_cast_as('trim(number_of_study_related_instances)', 'integer') }}
            as number_of_study_related_instances,

        -- dates
        {{ dicom_date('study_date') }} as study_date,
        {{ dicom_time('study_time') }} as study_time,
        {{ dicom_date('patient_birth_date') }} as patient_birth_date,
        window_from,
        window_to,

        -- timestamps
        queried_at,
        loaded_at

    from source

)

select * from renamed
