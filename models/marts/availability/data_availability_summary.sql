-- Cohort level: XNAT's studies per modality and per calendar quarter of the study date.

with

sessions as (

    select * from {{ ref('int_xnat_sessions__linked_to_patients') }}

),

per_quarter as (

    select
        modality,
        study_quarter,
        min(date_trunc('quarter', study_date)) as quarter_start_date,
        count(*) as number_of_studies,
        count(distinct nhs_number) as number_of_patients,
        coalesce(sum(scan_count), 0) as number_of_scans
    from sessions
    group by 1, 2

),

final as (

    select
        cast(modality as varchar) as modality,
        cast(study_quarter as varchar) as study_quarter,
        cast(quarter_start_date as date) as quarter_start_date,
        cast(number_of_studies as integer) as number_of_studies,
        cast(number_of_patients as integer) as number_of_patients,
        cast(number_of_scans as integer) as number_of_scans
    from per_quarter

)

select * from final
