-- A withdrawn patient's study is never in the manifest, whichever of their MRNs (or another
-- MRN sharing their NHS number) PACS filed it under. Returns the offending manifest rows.

select ingest_manifest.*
from {{ ref('ingest_manifest') }} as ingest_manifest
inner join {{ ref('int_master_patients__current') }} as master_patients
    on
        upper(trim(ingest_manifest.mrn)) = upper(trim(master_patients.mrn))
        or ingest_manifest.nhs_number = master_patients.nhs_number
where master_patients.patient_status = 'withdrawn'
