"""A warehouse for the report's tests: a synthetic cohort queried from PACS, part of it in XNAT.

Built once per test module (dbt is slow): the cohort's studies as one query run, its master
list, one failed load attempt, and a successful sync whose snapshot holds every second
study of each linked patient plus three hand-made sessions: one PACS never returned
(unexpected, and its modality tries to be markup), one labelled like a selected study with
another Study UID (uid_mismatch). ``Scenario`` says what was put where, so tests
compute their expectations from it and from ``pacs_study_selection`` (the models' own tested
answer to "which studies are selected"), never from hard-coded numbers.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from connectors.testbed.cohort import Cohort, make_cohort, raw_master_rows
from connectors.warehouse.dbt import build, copy_project
from connectors.warehouse.store import Warehouse
from tests.support.cohort_warehouse import complete_sync

AS_OF = dt.date(2026, 10, 1)
SYNC_AT = dt.datetime(2026, 10, 1, 12, 0)
EVIL = '</script><script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'


@dataclass
class Scenario:
    root: Path
    config: Path
    warehouse: Warehouse
    cohort: Cohort
    sessions: list[dict[str, Any]] = field(default_factory=list)
    failed_uid: str = ""
    failed_reason: str = "retrieve_incomplete"
    unexpected_session: str = "XNAT_UNEXPECTED"
    mismatch_session: str = "XNAT_MISMATCH"
    selected: dict[str, dict[str, Any]] = field(default_factory=dict)

    def read(self, relation: str) -> list[dict[str, Any]]:
        return self.warehouse.read_relation(relation)


def _ts(day: dt.date, hour: int = 9) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour))


def build_scenario(root: Path, n_patients: int = 12, seed: int = 11) -> Scenario:
    project = copy_project(root / "project")
    config = project / "pacs2xnat.toml"
    config.write_text('[warehouse]\npath = "warehouse/pacs2xnat.duckdb"\n')
    wh = Warehouse(project / "warehouse" / "pacs2xnat.duckdb")
    cohort = make_cohort(n_patients, seed=seed, as_of=AS_OF)
    sc = Scenario(project, config, wh, cohort)
    loaded = _ts(AS_OF, 8)
    wh.append("master_patients", raw_master_rows(cohort, "import-1", loaded, sheet=None))
    queries, studies = [], []
    for p in cohort.patients:
        qid = f"query-1-{p.mrn}"
        own = cohort.studies_of(p.mrn)
        queries.append(
            {
                "run_id": "query-1",
                "loaded_at": loaded,
                "query_id": qid,
                "mrn": p.mrn,
                "started_at": loaded,
                "finished_at": loaded,
                "outcome": "success",
                "studies_found": len(own),
                "sub_queries": 1,
            }
        )
        for s in own:
            studies.append(
                {
                    "run_id": "query-1",
                    "loaded_at": loaded,
                    "query_id": qid,
                    "queried_at": loaded,
                    "query_mrn": p.mrn,
                    "accession_number": s.accession_number,
                    "patient_id": p.mrn,
                    "study_date": s.dicom_study_date,
                    "study_time": s.study_time.strftime("%H%M%S"),
                    "study_description": s.description,
                    "study_instance_uid": s.study_instance_uid,
                    "modalities_in_study": "\\".join(s.modalities),
                    "number_of_study_related_instances": str(s.n_instances),
                    "patient_name": p.dicom_name,
                    "patient_birth_date": p.birth_date.strftime("%Y%m%d"),
                }
            )
    wh.append("pacs_queries", queries)
    wh.append("pacs_studies", studies)

    # every second dated study of each patient with an NHS number is in XNAT
    linked = [p for p in cohort.patients if p.nhs_number]
    k = 0
    for p in linked:
        for j, s in enumerate(x for x in cohort.studies_of(p.mrn) if x.study_date is not None):
            if j % 2:
                continue
            k += 1
            sc.sessions.append(
                _session(
                    f"XNAT_E{k:04d}",
                    p.nhs_number,
                    s.accession_number,
                    s.study_instance_uid,
                    s.modalities[0],
                    s.study_date,
                    len(s.series),
                )
            )
    first = linked[0]
    sc.sessions.append(
        _session(
            sc.unexpected_session,
            first.nhs_number,
            "LOADED_BY_HAND",
            "1.2.3.999.1",
            EVIL,
            first.reference_date - dt.timedelta(days=30),
            2,
        )
    )
    wh.append("xnat_sessions", sc.sessions)
    wh.append("xnat_syncs", [complete_sync("sync-1", SYNC_AT, len(sc.sessions))])
    wh.append(
        "runs",
        [
            {
                "run_id": "sync-1",
                "command": "sync",
                "started_at": SYNC_AT,
                "finished_at": SYNC_AT,
                "outcome": "success",
                "exit_code": 0,
                "loaded_at": SYNC_AT,
            }
        ],
    )
    build(project_dir=project, warehouse_path=wh.path)

    # Now that the models say which studies are selected: a failed attempt for one selected
    # study not in XNAT, and a session labelled like another but with a different Study UID.
    sc.selected = {
        r["study_instance_uid"]: r
        for r in sc.read("main.pacs_study_selection")
        if r["selection_status"] == "selected"
    }
    in_xnat = {s["study_instance_uid"] for s in sc.sessions}
    absent = sorted(uid for uid in sc.selected if uid not in in_xnat)
    sc.failed_uid, mismatch_uid = absent[0], absent[1]
    failed = sc.selected[sc.failed_uid]
    wh.append(
        "ingest_attempts",
        [
            {
                "run_id": "load-1",
                "loaded_at": SYNC_AT,
                "attempt_id": "attempt-1",
                "study_instance_uid": sc.failed_uid,
                "accession_number": failed["accession_number"],
                "nhs_number": failed["nhs_number"],
                "mode": "direct",
                "started_at": SYNC_AT,
                "finished_at": SYNC_AT,
                "outcome": "failed",
                "reason_category": sc.failed_reason,
                "message": EVIL,
            }
        ],
    )
    mm = sc.selected[mismatch_uid]
    extra = _session(
        sc.mismatch_session,
        mm["subject_label"],
        mm["session_label"],
        "1.2.3.999.2",
        "CT",
        mm["study_date"],
        1,
    )
    sc.sessions.append(extra)
    wh.append("xnat_sessions", [extra])
    build(project_dir=project, warehouse_path=wh.path)
    return sc


def _session(
    session_id: str,
    subject: str | None,
    label: str,
    uid: str,
    modality: str,
    date: dt.date | None,
    scans: int,
) -> dict[str, Any]:
    return {
        "run_id": "sync-1",
        "loaded_at": SYNC_AT,
        "synced_at": SYNC_AT,
        "project": "HNC",
        "subject_id": f"XNAT_S_{subject}",
        "subject_label": subject,
        "session_id": session_id,
        "session_label": label,
        "xsi_type": f"xnat:{modality.lower()}SessionData",
        "modality": modality,
        "session_date": date.isoformat() if date else "",
        "study_instance_uid": uid,
        "scan_count": scans,
        "insert_date": SYNC_AT.isoformat(" "),
    }


_BUILT: dict[str, Scenario] = {}


@pytest.fixture(scope="session")
def report_scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    """One built scenario for every report test module (two dbt builds, ~10 s, done once)."""
    if "scenario" not in _BUILT:
        _BUILT["scenario"] = build_scenario(tmp_path_factory.mktemp("report"))
    return _BUILT["scenario"]
