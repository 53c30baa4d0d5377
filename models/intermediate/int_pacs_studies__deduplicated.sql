-- One row per study: the latest observation of each Study Instance UID across every C-FIND of
-- every run (raw.pacs_studies is append-only, so a study seen each quarter has many rows).
-- The first and last time any query saw it are kept.
-- A table, not a view like the other intermediates: three models and their tests read it, and
-- as a view the window over every observation ran once per reader (benchmarks/dbt_build).

{{ config(materialized='table') }}

with

pacs_studies as (

    select * from {{ ref('stg_pacs__studies') }}

),

observations_counted as (

    select
        *,
        min(queried_at) over (partition by study_instance_uid) as first_queried_at,
        max(queried_at) over (partition by study_instance_uid) as last_queried_at,
        count(*) over (partition by study_instance_uid) as number_of_observations
    from pacs_studies

),

observations_ranked as (

    {{ first_per_group(
        'observations_counted',
        'study_instance_uid',
        'queried_at desc, loaded_at desc, run_id desc, query_id desc'
    ) }}

)

select * from observations_ranked
