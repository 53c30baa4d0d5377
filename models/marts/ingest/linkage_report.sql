-- What the admin fixes on the master list: one row per linkage problem. Held back (studies
-- not loaded until fixed): no_nhs_number, invalid_nhs_number, conflicting_nhs_numbers,
-- not_on_master_list. Listed for information (studies still loaded): merged_mrns (one NHS
-- number, several MRNs) and identity_mismatch (PACS name or birth date disagree).
-- Withdrawn patients are left out: nothing of theirs is ever loaded.

with

patients as (

    select * from {{ ref('int_master_patients__by_mrn') }}

),

selection as (

    select * from {{ ref('pacs_study_selection') }}

),

linked as (

    select * from {{ ref('int_pacs_studies__linked') }}

),

studies_per_mrn as (

    select
        mrn,
        count(*) as number_of_studies,
        count(*) filter (where selection_status = 'unlinked')
            as number_of_studies_held_back
    from selection
    group by 1

),

list_problems as (

    select
        patients.link_status as problem,
        patients.mrn,
        patients.nhs_numbers,
        coalesce(studies_per_mrn.number_of_studies, 0) as number_of_studies,
        coalesce(studies_per_mrn.number_of_studies_held_back, 0)
            as number_of_studies_held_back,
        case patients.link_status
            when 'no_nhs_number'
                then 'The master list gives this MRN no NHS number.'
            when 'invalid_nhs_number'
                then 'The NHS number fails the modulus-11 check.'
            else
                'The master list gives this MRN '
                || patients.number_of_nhs_numbers
                || ' different NHS numbers; its studies are held back until one remains.'
        end as details
    from patients
    left join studies_per_mrn
        on patients.mrn = studies_per_mrn.mrn
    where
        patients.link_status <> 'linked'
        and not patients.is_withdrawn

),

merged_mrns as (

    select
        'merged_mrns' as problem,
        patients.merged_mrns as mrn,
        patients.nhs_number as nhs_numbers,
        sum(coalesce(studies_per_mrn.number_of_studies, 0)) as number_of_studies,
        0 as number_of_studies_held_back,
        'One NHS number with ' || count(*)
        || ' MRNs (merged hospital records): all their studies go to one subject.'
            as details
    from patients
    left join studies_per_mrn
        on patients.mrn = studies_per_mrn.mrn
    where
        patients.number_of_mrns_for_nhs_number > 1
        and not patients.is_withdrawn
    group by patients.merged_mrns, patients.nhs_number

),

identity_mismatches as (

    select
        'identity_mismatch' as problem,
        selection.mrn,
        min(selection.nhs_number) as nhs_numbers,
        count(*) as number_of_studies,
        0 as number_of_studies_held_back,
        concat_ws(
            '; ',
            case
                when count(*) filter (where linked.has_name_mismatch) > 0
                    then 'PACS name differs from the master list on '
                    || count(*) filter (where linked.has_name_mismatch)
                    || ' studies'
            end,
            case
                when count(*) filter (where linked.has_birth_date_mismatch) > 0
                    then 'PACS birth date differs from the master list on '
                    || count(*) filter (where linked.has_birth_date_mismatch)
                    || ' studies'
            end
        ) as details
    from selection
    inner join linked
        on selection.study_instance_uid = linked.study_instance_uid
    where
        selection.has_identity_mismatch
        and not selection.is_withdrawn
    group by selection.mrn

),

not_on_master_list as (

    select
        'not_on_master_list' as problem,
        mrn,
        null as nhs_numbers,
        count(*) as number_of_studies,
        count(*) filter (where selection_status = 'unlinked')
            as number_of_studies_held_back,
        'PACS returned studies for an MRN that is not on the current master list.'
            as details
    from selection
    where link_status = 'not_on_master_list'
    group by mrn

),

all_problems as (

    select * from list_problems
    union all
    select * from merged_mrns
    union all
    select * from identity_mismatches
    union all
    select * from not_on_master_list

),

report as (

    select
        cast(problem as varchar) as problem,
        cast(mrn as varchar) as mrn,
        cast(nhs_numbers as varchar) as nhs_numbers,
        cast(number_of_studies as integer) as number_of_studies,
        cast(number_of_studies_held_back as integer) as number_of_studies_held_back,
        cast(details as varchar) as details
    from all_problems

)

select * from report
