with

source as (

    select * from {{ source('spreadsheets', 'master_patients') }}

),

renamed as (

    select
        -- ids
        run_id,
        trim(mrn) as mrn,
        nullif(regexp_replace(coalesce(nhs_number, ''), '[\s-]', '', 'g'), '') as nhs_number,

        -- strings
        lower(trim(status)) as patient_status,
        nullif(trim(patient_name), '') as patient_name,
        {{ normalise_person_name('patient_name') }} as patient_name_normalised,
        source_file,
        source_sha256,
        source_sheet,
        nullif(repairs, '') as repairs,

        -- numerics
        source_row,

        -- booleans
        {{ nhs_number_is_valid("regexp_replace(coalesce(nhs_number, ''), '[\\s-]', '', 'g')") }}
            as is_nhs_number_valid,

        -- dates
        reference_date,
        birth_date,

        -- timestamps
        loaded_at

    from source

)

select * from renamed
