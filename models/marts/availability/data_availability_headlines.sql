-- The report's headline numbers, one row each, in the order people read them: patients and
-- studies, studies per modality, the reconciliation by status, missing and unexpected by
-- reason, and the reconciliation bar's segments (status x reason). The cover sheet and the
-- page print these; nothing is counted in Python.

with

availability as (

    select * from {{ ref('data_availability') }}

),

reconciliation as (

    select * from {{ ref('reconciliation') }}

),

statuses as (

    select 'present' as category, 1 as status_order
    union all select 'missing', 2
    union all select 'uid_mismatch', 3
    union all select 'unexpected', 4

),

patients as (

    select
        count(distinct nhs_number) as patients,
        count(distinct case when is_on_master_list then nhs_number end)
            as patients_on_master_list,
        count(distinct case when number_of_studies > 0 then nhs_number end)
            as patients_with_studies_in_xnat,
        coalesce(sum(number_of_studies), 0) as studies_in_xnat
    from availability

),

totals as (

    select 'patients' as measure, cast(null as varchar) as category,
        cast(null as varchar) as subcategory, patients as value, 1 as measure_order,
        1 as sort_order
    from patients
    union all
    select 'patients_on_master_list', null, null, patients_on_master_list, 2, 1 from patients
    union all
    select 'patients_with_studies_in_xnat', null, null, patients_with_studies_in_xnat, 3, 1
    from patients
    union all
    select 'studies_in_xnat', null, null, studies_in_xnat, 4, 1 from patients

),

per_modality as (

    select
        'studies_per_modality' as measure,
        modality as category,
        cast(null as varchar) as subcategory,
        sum(number_of_studies) as value,
        5 as measure_order,
        row_number() over (order by modality) as sort_order
    from availability
    where number_of_studies > 0
    group by modality

),

by_status as (

    select
        'reconciliation' as measure,
        statuses.category,
        cast(null as varchar) as subcategory,
        count(reconciliation.reconciliation_key) as value,
        6 as measure_order,
        statuses.status_order as sort_order
    from statuses
    left join reconciliation
        on statuses.category = reconciliation.reconciliation_status
    group by statuses.category, statuses.status_order

),

reasons as (

    select
        reconciliation_status,
        coalesce(failure_reason, unexpected_reason, '') as reason,
        count(*) as value
    from reconciliation
    group by 1, 2

),

by_reason as (

    select
        case reconciliation_status
            when 'missing' then 'missing_by_reason'
            else 'unexpected_by_reason'
        end as measure,
        reason as category,
        cast(null as varchar) as subcategory,
        value,
        case reconciliation_status when 'missing' then 7 else 8 end as measure_order,
        row_number() over (
            partition by reconciliation_status order by value desc, reason
        ) as sort_order
    from reasons
    where reconciliation_status in ('missing', 'unexpected')

),

segments as (

    select
        'reconciliation_segments' as measure,
        reasons.reconciliation_status as category,
        reasons.reason as subcategory,
        reasons.value,
        9 as measure_order,
        row_number() over (
            order by statuses.status_order, reasons.value desc, reasons.reason
        ) as sort_order
    from reasons
    inner join statuses
        on reasons.reconciliation_status = statuses.category

),

unioned as (

    select * from totals
    union all select * from per_modality
    union all select * from by_status
    union all select * from by_reason
    union all select * from segments

),

final as (

    select
        cast(measure as varchar) as measure,
        cast(category as varchar) as category,
        cast(subcategory as varchar) as subcategory,
        cast(value as integer) as value,
        cast(measure_order as integer) as measure_order,
        cast(sort_order as integer) as sort_order
    from unioned

)

select * from final
