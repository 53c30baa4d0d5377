-- The master patient list as it stands: the rows of the most recent import. Each import is a
-- full snapshot, so an MRN missing from the newest list is no longer on the cohort.

with

master_patients as (

    select * from {{ ref('stg_spreadsheets__master_patients') }}

),

latest_import as (

    select run_id
    from master_patients
    order by loaded_at desc, run_id desc
    limit 1

),

current_rows as (

    select master_patients.*
    from master_patients
    inner join latest_import
        on master_patients.run_id = latest_import.run_id

)

select * from current_rows
