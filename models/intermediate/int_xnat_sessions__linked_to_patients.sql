-- The sessions XNAT holds now, each tied to its patient on the current master list (subject
-- label = NHS number) with the patient's MRN(s) and reference date, and the day arithmetic:
-- days_from_reference = study date - reference date (negative = before the reference date).

with

xnat_sessions as (

    select * from {{ ref('int_xnat_sessions__current') }}

),

master_patients as (

    select * from {{ ref('int_master_patients__current') }}

),

patients as (

    -- one NHS number may carry several MRNs (merged hospital records): list them all
    select
        nhs_number,
        string_agg(distinct mrn, ', ' order by mrn) as mrn,
        min(reference_date) as reference_date,
        case
            when bool_or(patient_status = 'active') then 'active'
            else min(patient_status)
        end as patient_status
    from master_patients
    where nhs_number is not null
    group by 1

),

linked as (

    select
        -- ids
        xnat_sessions.session_id,
        xnat_sessions.subject_label as nhs_number,
        patients.mrn,
        xnat_sessions.session_label,
        xnat_sessions.study_instance_uid,

        -- strings
        coalesce(xnat_sessions.modality, 'OTHER') as modality,
        patients.patient_status,

        -- numerics
        xnat_sessions.scan_count,
        xnat_sessions.session_date - patients.reference_date
            as days_from_reference,

        -- booleans
        patients.nhs_number is not null as is_on_master_list,

        -- dates
        xnat_sessions.session_date as study_date,
        patients.reference_date,
        {{ quarter_label('xnat_sessions.session_date') }} as study_quarter

    from xnat_sessions
    left join patients
        on xnat_sessions.subject_label = patients.nhs_number

)

select * from linked
