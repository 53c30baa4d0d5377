-- One row per MRN on the current master list, with what linking it to an NHS number gives:
-- linked (one valid NHS number), no_nhs_number, invalid_nhs_number (fails modulus 11) or
-- conflicting_nhs_numbers (two different numbers on the list for one MRN: held back, never
-- resolved silently). Several MRNs sharing one NHS number (merged hospital records) is
-- allowed and counted. A patient is withdrawn when any row of the MRN, or of another MRN with
-- the same NHS number, says so.

with

master_patients as (

    select * from {{ ref('int_master_patients__current') }}

),

rows_keyed as (

    select
        upper(trim(mrn)) as mrn_key,
        trim(mrn) as mrn,
        nhs_number,
        is_nhs_number_valid,
        patient_status,
        patient_name_normalised,
        birth_date,
        reference_date
    from master_patients
    where nullif(trim(mrn), '') is not null

),

withdrawn_nhs_numbers as (

    select distinct nhs_number
    from rows_keyed
    where patient_status = 'withdrawn' and nhs_number is not null

),

per_mrn as (

    select
        mrn_key,
        min(mrn) as mrn,
        count(distinct nhs_number) as number_of_nhs_numbers,
        case
            when count(distinct nhs_number) = 1 then min(nhs_number)
        end as nhs_number,
        string_agg(distinct nhs_number, '; ' order by nhs_number) as nhs_numbers,
        bool_and(coalesce(is_nhs_number_valid, false))
            filter (where nhs_number is not null) as is_nhs_number_valid,
        bool_or(patient_status = 'withdrawn') as is_withdrawn_on_list,
        -- "|"-joined (normalised names hold only A-Z, 0-9 and spaces), so both warehouses
        -- and the unit tests' fixtures spell them the same
        string_agg(
            distinct patient_name_normalised, '|' order by patient_name_normalised
        ) as list_names,
        string_agg(
            distinct cast(birth_date as varchar), '|'
            order by cast(birth_date as varchar)
        ) as list_birth_dates,
        min(reference_date) as reference_date,
        count(*) as number_of_list_rows
    from rows_keyed
    group by 1

),

mrns_per_nhs_number as (

    select
        rows_keyed.nhs_number,
        count(distinct rows_keyed.mrn_key) as number_of_mrns,
        string_agg(distinct per_mrn.mrn, '; ' order by per_mrn.mrn) as merged_mrns
    from rows_keyed
    inner join per_mrn
        on rows_keyed.mrn_key = per_mrn.mrn_key
    where rows_keyed.nhs_number is not null
    group by 1

),

linked as (

    select
        per_mrn.mrn_key,
        per_mrn.mrn,
        per_mrn.nhs_number,
        per_mrn.nhs_numbers,
        per_mrn.number_of_nhs_numbers,
        case
            when per_mrn.number_of_nhs_numbers > 1 then 'conflicting_nhs_numbers'
            when per_mrn.number_of_nhs_numbers = 0 then 'no_nhs_number'
            when not per_mrn.is_nhs_number_valid then 'invalid_nhs_number'
            else 'linked'
        end as link_status,
        coalesce(mrns_per_nhs_number.number_of_mrns, 0) as number_of_mrns_for_nhs_number,
        mrns_per_nhs_number.merged_mrns,
        per_mrn.is_withdrawn_on_list
        or withdrawn_nhs_numbers.nhs_number is not null as is_withdrawn,
        per_mrn.list_names,
        per_mrn.list_birth_dates,
        per_mrn.reference_date,
        per_mrn.number_of_list_rows
    from per_mrn
    left join mrns_per_nhs_number
        on per_mrn.nhs_number = mrns_per_nhs_number.nhs_number
    left join withdrawn_nhs_numbers
        on per_mrn.nhs_number = withdrawn_nhs_numbers.nhs_number

)

select * from linked
