"""It builds the dbt project for real (dbtRunner on a DuckDB file) with zero warnings, and the
marts agree with a synthetic cohort whose raw rows are appended the way the connectors do.

One seeded build is shared by the module's tests (dbt builds are slow); the expectations are
computed here from the cohort and the rules seed, never hard-coded.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from connectors.dbt import WAREHOUSE_ENV, BuildResult, run_dbt
from connectors.testbed.cohort import Cohort, Patient, Series, Study, make_cohort, nhs_check_digit
from connectors.warehouse import Warehouse
from tests.conftest import copy_project

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
    loaded = _ts(AS_OF, 8)
    rows = [
        {
            "run_id": run_id,
            "loaded_at": loaded,
            "source_file": "master.xlsx",
            "source_sha256": "0" * 64,
            "source_sheet": "Sheet1",
            "source_row": i + 2,
            "mrn": p.mrn,
            "nhs_number": p.nhs_number,
            "reference_date": p.reference_date,
            "status": p.status,
            "patient_name": p.list_name,
            "birth_date": p.birth_date,
        }
        for i, p in enumerate(cohort.patients)
    ]
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
    return {"in_xnat": in_xnat, "conflict_uid": conflict_study.study_instance_uid}


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


@pytest.fixture(scope="module")
def cohort() -> Cohort:
    return make_cohort(40, seed=7, as_of=AS_OF)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, cohort: Cohort) -> dict[str, Any]:
    """A project copy and warehouse with the cohort loaded and built once (--warn-error)."""
    project = copy_project(tmp_path_factory.mktemp("dbt") / "project")
    warehouse = Warehouse(project / "warehouse" / "pacs2xnat.duckdb")
    warehouse.ensure()
    facts = load_cohort(warehouse, cohort)
    result = build_warn_error(project, warehouse.path)

    def read(relation: str) -> list[dict[str, Any]]:
        return warehouse.read_relation(relation)

    return {
        "result": result,
        "warehouse": warehouse,
        "read": read,
        "manifest": read("main.ingest_manifest"),
        "selection": {r["study_instance_uid"]: r for r in read("main.pacs_study_selection")},
        **facts,
    }


def test_plain_dbt_build_on_a_clean_clone_has_zero_warnings(tmp_path: Path) -> None:
    """It runs plain `dbt build` (the analyst's command) in a fresh copy with no warehouse:
    the folder, file (0600) and raw tables are made, every model and test passes, warnings as
    errors, and the marts are empty."""
    project = copy_project(tmp_path / "project")
    env = {k: v for k, v in os.environ.items() if k != WAREHOUSE_ENV}
    env["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    dbt = Path(sys.executable).with_name("dbt")
    res = subprocess.run(
        [str(dbt), "--warn-error", "--no-use-colors", "build"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    done = re.search(r"Done\. PASS=(\d+) WARN=(\d+) ERROR=(\d+) SKIP=(\d+)", res.stdout)
    assert done is not None, res.stdout[-2000:]
    passed, warned, errored, skipped = map(int, done.groups())
    assert (warned, errored, skipped) == (0, 0, 0)
    assert passed > 100
    db = project / "warehouse" / "pacs2xnat.duckdb"
    assert oct(db.stat().st_mode & 0o777) == "0o600"
    warehouse = Warehouse(db)
    for mart in ("ingest_manifest", "pacs_study_selection", "description_triage"):
        assert warehouse.read_relation(f"main.{mart}") == []
    assert warehouse.read_relation("main.linkage_report") == []


def test_seeded_warehouse_builds_with_zero_warnings(built: dict[str, Any]) -> None:
    """It passes every unit test, data test and contract on the cohort, warnings as errors."""
    result: BuildResult = built["result"]
    assert result.success, result.failures
    assert set(result.counts) <= {"success", "pass"}, result.counts


def test_manifest_holds_every_includable_linked_study_once(
    built: dict[str, Any], cohort: Cohort
) -> None:
    """It lists each includable, linked study not yet in XNAT exactly once, and nothing else."""
    expected = {s.study_instance_uid for s in includable_studies(cohort, seed_decisions())} - built[
        "in_xnat"
    ]
    uids = [r["study_instance_uid"] for r in built["manifest"]]
    assert len(uids) == len(set(uids))
    assert set(uids) == expected
    assert len(expected) > 20


def test_manifest_rows_carry_the_link_and_labels(built: dict[str, Any], cohort: Cohort) -> None:
    """It gives each study its patient's NHS number as subject and its accession as session."""
    by_uid = {s.study_instance_uid: s for s in cohort.studies}
    for row in built["manifest"]:
        study = by_uid[row["study_instance_uid"]]
        patient = cohort.patient(study.mrn)
        assert row["nhs_number"] == row["subject_label"] == patient.nhs_number
        assert row["session_label"] == study.accession_number
        assert row["mrn"] == patient.mrn
        assert row["study_date"] == study.study_date
        assert row["modalities_in_study"] == "/".join(sorted(study.modalities))
        assert row["number_of_study_related_instances"] == study.n_instances


def test_studies_already_in_xnat_are_left_out(built: dict[str, Any]) -> None:
    """It leaves out a study XNAT holds by UID and one it holds by subject and session label."""
    manifest = {r["study_instance_uid"] for r in built["manifest"]}
    for uid in built["in_xnat"]:
        assert uid not in manifest
        assert built["selection"][uid]["selection_status"] == "selected"


def test_withdrawn_patients_never_reach_the_manifest(built: dict[str, Any], cohort: Cohort) -> None:
    """It marks every study of a withdrawn patient withdrawn, and none is in the manifest."""
    gone = withdrawn_mrns(cohort)
    assert gone
    manifest = {r["study_instance_uid"] for r in built["manifest"]}
    for s in cohort.studies:
        if s.mrn in gone:
            assert built["selection"][s.study_instance_uid]["selection_status"] == "withdrawn"
            assert s.study_instance_uid not in manifest


def test_selection_deduplicates_repeated_observations(
    built: dict[str, Any], cohort: Cohort
) -> None:
    """It keeps one row per study seen by two runs, with the first and last query times."""
    selection = built["selection"]
    assert len(selection) == len(cohort.studies) + 1  # + the hand-built conflict study
    again = {s.study_instance_uid for p in cohort.patients[:5] for s in cohort.studies_of(p.mrn)}
    assert again
    for uid in again:
        row = selection[uid]
        assert row["first_queried_at"] < row["last_queried_at"]


def test_placeholder_date_is_set_aside(built: dict[str, Any], cohort: Cohort) -> None:
    """It sets aside the cohort's placeholder-dated study with the reason placeholder_date."""
    placeholders = [s for s in cohort.studies if s.placeholder_date]
    assert placeholders
    for s in placeholders:
        row = built["selection"][s.study_instance_uid]
        assert row["set_aside_reason"] == "placeholder_date"
        assert row["study_date"] == dt.datetime.strptime(s.placeholder_date, "%Y%m%d").date()
        assert row["selection_status"] in {"set_aside", "withdrawn", "excluded", "unknown"}


def test_unknown_descriptions_are_in_triage(built: dict[str, Any], cohort: Cohort) -> None:
    """It lists each description on neither list once, with its study and patient counts."""
    rules = seed_decisions()
    gone = withdrawn_mrns(cohort)
    unknown: dict[str, list[Study]] = {}
    for s in cohort.studies:
        if s.description not in rules and s.mrn not in gone:
            unknown.setdefault(s.description, []).append(s)
    assert unknown
    triage = {r["example_study_description"]: r for r in built["read"]("main.description_triage")}
    assert set(triage) == set(unknown)
    for desc, studies in unknown.items():
        row = triage[desc]
        assert row["description_decision"] == "unknown"
        assert row["number_of_studies"] == len(studies)
        assert row["number_of_patients"] == len({s.mrn for s in studies})


def test_linkage_report_lists_each_problem(built: dict[str, Any], cohort: Cohort) -> None:
    """It reports the missing and invalid NHS numbers, the MRN with two NHS numbers, the merged
    MRNs and the identity mismatch, each with its MRN."""
    report = {(r["problem"], r["mrn"]): r for r in built["read"]("main.linkage_report")}
    gone = withdrawn_mrns(cohort)
    no_nhs = {p.mrn for p in cohort.patients if not p.nhs_number and p.mrn not in gone}
    invalid = {
        p.mrn for p in cohort.patients if p.nhs_number and not is_linkable(p) and p.mrn not in gone
    }
    assert no_nhs
    assert invalid
    for mrn in no_nhs:
        assert ("no_nhs_number", mrn) in report
    for mrn in invalid:
        assert ("invalid_nhs_number", mrn) in report
    conflict = report[("conflicting_nhs_numbers", CONFLICT_MRN)]
    assert conflict["nhs_numbers"] == "4010232137; 9434765919"
    assert conflict["number_of_studies_held_back"] == 1
    assert built["selection"][built["conflict_uid"]]["selection_status"] == "unlinked"
    shared: dict[str, list[str]] = {}
    for p in cohort.patients:
        if p.nhs_number and p.mrn not in gone:
            shared.setdefault(p.nhs_number, []).append(p.mrn)
    merged = {"; ".join(sorted(m)) for m in shared.values() if len(m) > 1}
    assert merged
    assert {mrn for problem, mrn in report if problem == "merged_mrns"} == merged
    renamed = {p.mrn for p in cohort.patients if p.pacs_name and cohort.studies_of(p.mrn)}
    assert renamed
    mismatched = {mrn for problem, mrn in report if problem == "identity_mismatch"}
    assert mismatched == renamed - gone
