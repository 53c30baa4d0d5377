"""The whole step 4 chain on the real mart: raw PACS rows and the master list → ``dbt build``
→ ``ingest_manifest`` → ``pacs2xnat load`` → XNAT, and the next manifest leaves out what was
loaded (the load's fresh sync is the latest successful sync the models read)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from connectors.config import LoadConfig, Settings, WarehouseConfig
from connectors.load.runner import run_load
from connectors.testbed.cohort import Cohort
from connectors.warehouse.runs import RunContext
from connectors.warehouse.store import Warehouse
from tests.support.cohort_warehouse import load_cohort
from tests.support.load_helpers import attempts, expected_files
from tests.support.pacs_fixtures import pacs_settings
from tests.support.xnat_fixtures import StandinHandle, xnat_settings


@pytest.mark.slow
@pytest.mark.orthanc
def test_load_reads_the_built_manifest_and_the_next_build_leaves_loaded_studies_out(
    orthanc: Any, pacs_cohort: Cohort, standin_xnat: StandinHandle, workspace: Path
) -> None:
    """It builds the manifest with dbt, loads the first studies of it (--limit), and a dry
    run afterwards (a new sync and build) no longer lists them."""
    base = dataclasses.replace(
        Settings(base_dir=workspace),
        warehouse=WarehouseConfig(path=str(workspace / "warehouse" / "pacs2xnat.duckdb")),
        load=LoadConfig(work_dir=str(workspace / "work"), backoff_seconds=0.05),
    )
    settings = pacs_settings(orthanc, xnat_settings(standin_xnat, base))
    wh = Warehouse(settings.warehouse_path)
    load_cohort(wh, pacs_cohort)
    with wh.connect() as con:  # the test-bed PACS holds at most a few instances per study
        con.executemany(
            "update raw.pacs_studies set number_of_study_related_instances = ? "
            "where study_instance_uid = ?",
            [(str(expected_files(s)), s.study_instance_uid) for s in pacs_cohort.studies],
        )

    first = run_load(RunContext(settings, "load", []), "direct", limit=3)
    assert (first["loaded"], first["failed"]) == (3, 0)
    assert first["studies"] == 3
    assert first["manifest_rows"] > 3
    loaded = [a for a in attempts(settings) if a["outcome"] == "loaded"]
    by_uid = {s.study_instance_uid: s for s in pacs_cohort.studies}
    for a in loaded:
        study = by_uid[a["study_instance_uid"]]
        assert a["subject_label"] == pacs_cohort.patient(study.mrn).nhs_number
        assert a["files_archived"] == expected_files(study)

    plan = run_load(RunContext(settings, "load", []), "direct", dry_run=True)
    assert plan["sync"]["sessions"] == 3
    assert plan["manifest_rows"] == first["manifest_rows"] - 3
    rows = wh.read_relation("main.ingest_manifest")
    assert not {a["study_instance_uid"] for a in loaded} & {r["study_instance_uid"] for r in rows}
