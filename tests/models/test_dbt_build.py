"""It builds the dbt project for real (dbtRunner on a DuckDB file) with zero warnings, and the
marts agree with a synthetic cohort whose raw rows are appended the way the connectors do.

One seeded build is shared by the module's tests (dbt builds are slow); the expectations are
computed here from the cohort and the rules seed, never hard-coded.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from connectors.testbed.cohort import (
    Cohort,
    Study,
    make_cohort,
)
from connectors.warehouse.dbt import WAREHOUSE_ENV, BuildResult, copy_project
from connectors.warehouse.store import Warehouse
from tests.support.cohort_warehouse import (
    AS_OF,
    CONFLICT_MRN,
    build_warn_error,
    includable_studies,
    is_linkable,
    load_cohort,
    seed_decisions,
    withdrawn_mrns,
)

pytestmark = pytest.mark.slow  # every test reads a dbt build of its own module


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
