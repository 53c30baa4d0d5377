-- How many studies PACS returned end in each selection status: what `pacs2xnat run` prints
-- after its build.

with

selection as (

    select * from {{ ref('pacs_study_selection') }}

),

per_status as (

    select
        cast(selection_status as varchar) as selection_status,
        cast(count(*) as integer) as number_of_studies
    from selection
    group by 1

)

select * from per_status
