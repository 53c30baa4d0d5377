-- Who is due for a PACS query, and for which StudyDate window. One row per active MRN on the
-- current master list. SQL decides; the connector only asks what this model says.
--   new:     never successfully queried over all dates -> all dates (window_from null)
--   ongoing: from the last successful query's window_to minus var('overlap_days') to today
-- A patient whose last successful query already covers today is not due (a rerun the same
-- day asks only for what is left).

with

master_patients as (

    select * from {{ ref('int_master_patients__current') }}

),

pacs_queries as (

    select * from {{ ref('stg_pacs__queries') }}

),

patients_with_status as (

    select
        mrn,
        bool_or(patient_status = 'withdrawn') as is_withdrawn
    from master_patients
    where mrn is not null and mrn <> ''
    group by 1

),

active_patients as (

    select mrn
    from patients_with_status
    where not is_withdrawn

),

successful_queries_summarised as (

    select
        mrn,
        bool_or(window_from is null) as has_full_history,
        max(window_to) as last_window_to,
        max(finished_at) as last_queried_at
    from pacs_queries
    where is_success
    group by 1

),

query_windows as (

    select
        active_patients.mrn,
        case
            when coalesce(successful_queries_summarised.has_full_history, false)
                then 'ongoing'
            else 'new'
        end as stream,
        successful_queries_summarised.last_window_to,
        successful_queries_summarised.last_queried_at,
        {{ pacs2xnat_today() }} as today
    from active_patients
    left join successful_queries_summarised
        on active_patients.mrn = successful_queries_summarised.mrn

),

final as (

    select
        mrn,
        stream,
        case
            when stream = 'ongoing'
                then cast(
                    last_window_to - cast({{ var('overlap_days') }} as integer)
                    as date
                )
        end as window_from,
        today as window_to,
        last_window_to,
        last_queried_at,
        stream = 'new' or coalesce(last_window_to < today, true) as is_due
    from query_windows

)

select * from final
