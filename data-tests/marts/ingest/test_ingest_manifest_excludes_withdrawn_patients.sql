-- A withdrawn patient's study is never in the manifest, whichever of their MRNs (or another
-- MRN sharing their NHS number) PACS filed it under. Returns the offending manifest rows.

with

withdrawn as (

    select
        upper(trim(mrn)) as mrn_key,
        nhs_number
    from {{ ref('int_master_patients__current') }}
    where patient_status = 'withdrawn'

)

select ingest_manifest.*
from {{ ref('ingest_manifest') }} as ingest_manifest
where
    upper(trim(ingest_manifest.mrn)) in (select mrn_key from withdrawn)
    or ingest_manifest.nhs_number in (
        select nhs_number from withdrawn where nhs_number is not null
    )
