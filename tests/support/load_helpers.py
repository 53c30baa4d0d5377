"""Helpers shared by the load tests: settings that point at the test-bed Orthanc and the
stand-in XNAT, and a manifest table written straight into the test warehouse."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from connectors.config import LoadConfig, Settings, WarehouseConfig
from connectors.testbed.cohort import Cohort, Study
from connectors.warehouse.store import Warehouse
from tests.support.pacs_fixtures import PACS_INSTANCES_PER_SERIES, pacs_settings
from tests.support.xnat_fixtures import StandinHandle, xnat_settings

MANIFEST_DDL = """
create or replace table main.ingest_manifest (
    accession_number varchar, patient_id varchar, study_date date,
    study_description varchar, study_instance_uid varchar, nhs_number varchar,
    subject_label varchar, session_label varchar, mrn varchar,
    modalities_in_study varchar, number_of_study_related_instances integer,
    ingest_action varchar, xnat_session_id varchar
)"""


def load_settings_for(
    tmp: Path, orthanc: Any, standin: StandinHandle, pacs: dict[str, Any] | None = None, **load: Any
) -> Settings:
    base = Settings(base_dir=tmp)
    base = dataclasses.replace(
        base,
        warehouse=WarehouseConfig(path=str(tmp / "warehouse" / "pacs2xnat.duckdb")),
        load=LoadConfig(
            **{"work_dir": str(tmp / "work"), "backoff_seconds": 0.05, "retries": 2, **load}
        ),
    )
    base = xnat_settings(standin, base)
    return pacs_settings(orthanc, base, **(pacs or {}))


def expected_files(study: Study) -> int:
    """What the test-bed PACS holds of the study (the fixtures cap instances per series)."""
    return sum(min(se.n_instances, PACS_INSTANCES_PER_SERIES) for se in study.series)


def pick_studies(cohort: Cohort, n: int, offset: int = 0) -> list[Study]:
    """``n`` cohort studies with a real date and images, in a fixed order."""
    usable = [s for s in cohort.studies if s.placeholder_date is None and s.n_instances > 0]
    return usable[offset : offset + n]


def write_manifest(
    settings: Settings, cohort: Cohort, studies: list[Study], expected: dict[str, int] | None = None
) -> list[dict[str, Any]]:
    """A stand-in for the ``ingest_manifest`` mart (same columns and types as its contract),
    so the loader is tested without building the whole PACS → manifest chain each time."""
    rows = []
    for s in studies:
        p = cohort.patient(s.mrn)
        subject = p.nhs_number or f"NONHS{s.mrn}"
        rows.append(
            {
                "accession_number": s.accession_number,
                "patient_id": s.mrn,
                "study_date": s.study_date,
                "study_description": s.description,
                "study_instance_uid": s.study_instance_uid,
                "nhs_number": p.nhs_number,
                "subject_label": subject,
                "session_label": s.accession_number,
                "mrn": s.mrn,
                "modalities_in_study": "\\".join(s.modalities),
                "number_of_study_related_instances": (expected or {}).get(
                    s.study_instance_uid, expected_files(s)
                ),
                "ingest_action": "load",
                "xnat_session_id": None,
            }
        )
    wh = Warehouse(settings.warehouse_path)
    with wh.connect() as con:
        con.execute(MANIFEST_DDL)
        if rows:
            cols = list(rows[0])
            con.executemany(
                f"insert into main.ingest_manifest ({', '.join(cols)}) "
                f"values ({', '.join('?' * len(cols))})",
                [tuple(r[c] for c in cols) for r in rows],
            )
    return rows


def attempts(settings: Settings) -> list[dict[str, Any]]:
    """Every ``raw.ingest_attempts`` row, in the order the attempts ended."""
    return Warehouse(settings.warehouse_path).read_relation(
        "raw.ingest_attempts", "order by finished_at, loaded_at"
    )
