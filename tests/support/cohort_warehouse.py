"""A warehouse filled from the synthetic cohort through the connectors' own raw tables, as a
query, an import and a sync would have filled it; and what the models should make of it."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path
from typing import Any

from connectors.testbed.cohort import (
    Cohort,
    Patient,
    Series,
    Study,
    nhs_check_digit,
    raw_master_rows,
)
from connectors.warehouse.dbt import BuildResult, run_dbt
from connectors.warehouse.store import Warehouse

AS_OF = dt.date(2026, 6, 30)
BUILD_ARGS = ["--warn-error", "build", "--vars", json.dumps({"today": AS_OF.isoformat()})]
CONFLICT_MRN = "RA999999"  # one MRN given two NHS numbers: built by hand, as cohort.py says


def build_warn_error(project: Path, warehouse: Path) -> BuildResult:
    """``dbt --warn-error build``: any warning fails the build."""
    return run_dbt(BUILD_ARGS, project_dir=project, warehouse_path=warehouse)


def _ts(day: dt.date, hour: int = 9) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour))


def master_rows(cohort: Cohort, run_id: str) -> list[dict[str, Any]]:
    """The master list as `patients import` appends it, plus the hand-built conflict MRN."""
    rows = raw_master_rows(cohort, run_id, _ts(AS_OF, 8))
    n = len(rows) + 2
    for k, nhs in enumerate(("9434765919", "4010232137")):
        rows.append(
            {
                **rows[0],
                "source_row": n + k,
                "mrn": CONFLICT_MRN,
                "nhs_number": nhs,
                "status": "active",
                "patient_name": "Conflict, Case",
                "birth_date": dt.date(1950, 1, 1),
            }
        )
    return rows


def study_row(study: Study, patient: Patient, run_id: str, query_id: str, day: dt.date) -> dict:
    return {
        "run_id": run_id,
        "loaded_at": _ts(day, 10),
        "query_id": query_id,
        "queried_at": _ts(day),
        "query_mrn": patient.mrn,
        "accession_number": study.accession_number,
        "patient_id": patient.mrn,
        "study_date": study.dicom_study_date,
        "study_time": study.study_time.strftime("%H%M%S"),
        "study_description": study.description,
        "study_instance_uid": study.study_instance_uid,
        "modalities_in_study": "\\".join(study.modalities),
        "number_of_study_related_instances": str(study.n_instances),
        "patient_name": patient.dicom_name,
        "patient_birth_date": patient.birth_date.strftime("%Y%m%d"),
    }


def query_row(patient_mrn: str, run_id: str, query_id: str, day: dt.date, found: int) -> dict:
    return {
        "run_id": run_id,
        "loaded_at": _ts(day, 10),
        "query_id": query_id,
        "mrn": patient_mrn,
        "started_at": _ts(day),
        "finished_at": _ts(day),
        "outcome": "success",
        "studies_found": found,
        "sub_queries": 1,
    }


def load_cohort(warehouse: Warehouse, cohort: Cohort) -> dict[str, Any]:
    """Append the cohort as two query runs (the second sees the first 5 patients again), a
    master list, and a successful sync holding two includable studies (one matched by UID,
    one by labels only). Returns what the test needs to know about those choices."""
    warehouse.append("master_patients", master_rows(cohort, "import-1"))
    queries, studies = [], []
    for run_id, day, patients in (
        ("query-1", AS_OF - dt.timedelta(days=90), cohort.patients),
        ("query-2", AS_OF, cohort.patients[:5]),
    ):
        for p in patients:
            qid = f"{run_id}-{p.mrn}"
            own = cohort.studies_of(p.mrn)
            queries.append(query_row(p.mrn, run_id, qid, day, len(own)))
            studies += [study_row(s, p, run_id, qid, day) for s in own]
    # the conflicting MRN has one includable study on PACS: it must be held back
    series = (Series("1.2.826.0.1.3680043.10.1234.9991", 1, "CT", "Neck", 12),)
    conflict_study = Study(
        CONFLICT_MRN, "1.2.826.0.1.3680043.10.1234.999", "RJ99000001", AS_OF, dt.time(9),
        "CT Neck with contrast", ("CT",), series,
    )  # fmt: skip
    conflict_patient = Patient(
        CONFLICT_MRN, None, "CONFLICT", "CASE", "F", dt.date(1950, 1, 1), AS_OF
    )
    queries.append(query_row(CONFLICT_MRN, "query-1", "query-1-c", AS_OF, 1))
    studies.append(study_row(conflict_study, conflict_patient, "query-1", "query-1-c", AS_OF))
    warehouse.append("pacs_queries", queries)
    warehouse.append("pacs_studies", studies)

    rules = seed_decisions()
    includable = [s for s in includable_studies(cohort, rules)]
    by_uid, by_label = includable[0], includable[1]
    in_xnat = {by_uid.study_instance_uid, by_label.study_instance_uid}
    sync_at = _ts(AS_OF, 12)
    warehouse.append(
        "runs",
        [
            {
                "run_id": "sync-1",
                "command": "sync",
                "started_at": sync_at,
                "finished_at": sync_at,
                "outcome": "success",
                "exit_code": 0,
                "loaded_at": sync_at,
            }
        ],
    )
    sessions = []
    for k, (s, uid) in enumerate(((by_uid, by_uid.study_instance_uid), (by_label, None))):
        p = cohort.patient(s.mrn)
        sessions.append(
            {
                "run_id": "sync-1",
                "loaded_at": sync_at,
                "synced_at": sync_at,
                "project": "HNC",
                "subject_label": p.nhs_number,
                "session_id": f"XNAT_E{k}",
                "session_label": s.accession_number,
                "study_instance_uid": uid,
            }
        )
    warehouse.append("xnat_sessions", sessions)
    warehouse.append("xnat_syncs", [complete_sync("sync-1", sync_at, len(sessions))])
    return {"in_xnat": in_xnat, "conflict_uid": conflict_study.study_instance_uid}


def complete_sync(sync_id: str, at: dt.datetime, sessions: int) -> dict[str, Any]:
    """The raw.xnat_syncs row that makes a hand-written snapshot the current one."""
    return {
        "run_id": sync_id,
        "loaded_at": at,
        "sync_id": sync_id,
        "project": "HNC",
        "started_at": at,
        "finished_at": at,
        "sessions": sessions,
        "subjects": sessions,
    }


def seed_decisions() -> dict[str, set[str]]:
    """The rules seed: description -> its decisions (the cohort spells them as the seed does)."""
    from connectors import PROJECT_ROOT

    out: dict[str, set[str]] = {}
    with open(PROJECT_ROOT / "seeds" / "study_description_rules.csv", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            out.setdefault(row["description"], set()).add(row["decision"])
    return out


def withdrawn_mrns(cohort: Cohort) -> set[str]:
    """Withdrawn patients, and any MRN sharing a withdrawn patient's NHS number."""
    gone = {p.nhs_number for p in cohort.patients if p.status == "withdrawn" and p.nhs_number}
    return {p.mrn for p in cohort.patients if p.status == "withdrawn" or p.nhs_number in gone}


def is_linkable(p: Patient) -> bool:
    nhs = p.nhs_number
    return bool(
        nhs and len(nhs) == 10 and nhs.isdigit() and nhs_check_digit(nhs[:9]) == int(nhs[9])
    )


def includable_studies(cohort: Cohort, rules: dict[str, set[str]]) -> list[Study]:
    """Studies the pipeline must select: included description, real date, images, a linkable
    patient who is not withdrawn."""
    gone = withdrawn_mrns(cohort)
    return [
        s
        for s in cohort.studies
        if rules.get(s.description) == {"include"}
        and s.study_date is not None
        and s.n_instances > 0
        and s.accession_number
        and s.mrn not in gone
        and is_linkable(cohort.patient(s.mrn))
    ]
