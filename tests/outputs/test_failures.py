"""``pacs2xnat failures``: the register built by real dbt from attempts appended the way the
loader appends them, printed, exported Excel-safe, and retried against real Orthanc and the
stand-in XNAT (only the retryable studies; a 'retry' resolution puts a permanent one back)."""

from __future__ import annotations

import csv
import datetime as dt
import json
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from connectors import console
from connectors.app.cli import app
from connectors.testbed.cohort import Cohort, Study, make_cohort
from connectors.warehouse.store import Warehouse
from tests.support.cohort_warehouse import (
    includable_studies,
    is_linkable,
    seed_decisions,
    withdrawn_mrns,
)
from tests.support.fault_helpers import (
    Template,
    assert_nothing_lost,
    attempts,
    fault_settings,
    raw_rows,
    sessions_by_uid,
    workspace_from,
    write_config,
)
from tests.support.xnat_fixtures import StandinHandle

FORMULA = '=HYPERLINK("http://example.invalid","click")'


def attempt(study: Study, run_id: str, at: dt.datetime, outcome: str, reason: str | None = None,
            message: str | None = None) -> dict[str, Any]:  # fmt: skip
    """One raw.ingest_attempts row as connectors/load.py appends it."""
    return {
        "run_id": run_id,
        "loaded_at": at,
        "attempt_id": str(uuid.uuid4()),
        "study_instance_uid": study.study_instance_uid,
        "accession_number": study.accession_number,
        "session_label": study.accession_number,
        "mode": "direct",
        "retrieve_method": "c-get",
        "started_at": at,
        "finished_at": at + dt.timedelta(seconds=5),
        "outcome": outcome,
        "reason_category": reason,
        "message": message,
    }


def write_resolutions(project: Path, rows: list[dict[str, str]]) -> None:
    header = ["accession_number", "study_instance_uid", "outcome", "note", "decided_on",
              "decided_by"]  # fmt: skip
    with open(project / "seeds" / "failure_resolutions.csv", "w", newline="") as f:
        w = csv.DictWriter(f, header)
        w.writeheader()
        w.writerows({k: r.get(k, "") for k in header} for r in rows)


@pytest.fixture(autouse=True)
def _console_back_to_normal() -> Iterator[None]:
    """The CLI's --json sets module state in connectors.console; later tests expect none."""
    yield
    console.configure(quiet=False, json_mode=False, verbose=False)


@pytest.fixture(scope="module")
def cohort() -> Cohort:
    return make_cohort(40, seed=7, as_of=dt.date(2026, 6, 30))


@pytest.mark.slow
def test_failures_prints_the_open_register_and_exports_it_excel_safe(
    workspace: Path, cli: CliRunner, cohort: Cohort
) -> None:
    """It lists, cumulatively across runs, the studies whose latest attempt failed (an old
    permanent one, a transient one, one resolved 'retry') and a held-back unlinked study, not
    the one resolved 'cancelled' nor the one that loaded later; counts per reason at the foot;
    the CSV is owner-only, has a BOM, and escapes a message that is a formula."""
    studies = includable_studies(cohort, seed_decisions())[:5]
    gone = withdrawn_mrns(cohort)
    unlinked = next(
        s
        for s in cohort.studies
        if seed_decisions().get(s.description) == {"include"}
        and s.study_date is not None
        and s.n_instances > 0
        and s.mrn not in gone
        and not is_linkable(cohort.patient(s.mrn))
    )
    wh = Warehouse(workspace / "warehouse" / "pacs2xnat.duckdb")
    day = dt.datetime(2026, 6, 1, 9)
    for table, rows in raw_rows(cohort, [*studies, unlinked], "q1", day).items():
        wh.append(table, rows)
    old, transient, cancelled, later_loaded, retry = studies
    last_year = dt.datetime(2025, 6, 1, 10)
    wh.append(
        "ingest_attempts",
        [
            attempt(old, "r1", last_year, "failed", "rejected_by_xnat", FORMULA),
            attempt(later_loaded, "r1", last_year, "failed", "timeout", "no answer"),
            attempt(transient, "r2", day, "failed", "xnat_unavailable", "HTTP 503"),
            attempt(cancelled, "r2", day, "failed", "not_found_on_pacs", "not on PACS"),
            attempt(later_loaded, "r2", day, "loaded"),
            attempt(retry, "r2", day, "failed", "rejected_by_xnat", "bad header"),
        ],
    )
    write_resolutions(
        workspace,
        [
            {"accession_number": cancelled.accession_number, "outcome": "cancelled",
             "note": "cancelled in RIS", "decided_on": "2026-06-02", "decided_by": "admin"},
            {"study_instance_uid": retry.study_instance_uid, "outcome": "retry",
             "decided_on": "2026-06-02", "decided_by": "admin"},
        ],
    )  # fmt: skip
    out = workspace / "exports" / "failures.csv"
    res = cli.invoke(app, ["failures", "--csv", str(out)])
    assert res.exit_code == 0, res.output
    for s in (old, transient, retry, unlinked):
        assert s.accession_number in res.stdout
    for s in (cancelled, later_loaded):
        assert s.accession_number not in res.stdout
    assert "rejected_by_xnat 2" in res.stdout
    assert "unlinked 1" in res.stdout

    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    with open(out, encoding="utf-8-sig", newline="") as f:
        rows = {r["Accession Number"]: r for r in csv.DictReader(f)}
    assert set(rows) == {s.accession_number for s in (old, transient, retry, unlinked)}
    assert rows[old.accession_number]["Last Message"] == "'" + FORMULA
    assert rows[old.accession_number]["Retryable"] == "false"
    assert rows[transient.accession_number]["Retryable"] == "true"
    assert rows[retry.accession_number]["Resolution"] == "retry"
    assert rows[retry.accession_number]["Retryable"] == "true"
    assert rows[unlinked.accession_number]["Stage"] == "held_back"

    res = cli.invoke(app, ["--json", "failures"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert (summary["open"], summary["retryable"], summary["held_back"]) == (4, 2, 1)
    register = {r["study_instance_uid"]: r for r in wh.read_relation("main.ingest_failures")}
    assert not register[cancelled.study_instance_uid]["is_open"]  # history stays
    assert later_loaded.study_instance_uid not in register


@pytest.mark.slow
@pytest.mark.orthanc
def test_failures_retry_loads_only_the_retryable_and_a_retry_resolution_puts_one_back(
    template: Template, orthanc: Any, standin_xnat: StandinHandle, tmp_path: Path
) -> None:
    """It retries the transient failure and not the permanent conflict; once the admin has
    cleared the conflict in XNAT and written 'retry' for it, the next --retry loads it."""
    from connectors.testbed.xnat_standin.store import Session

    project = workspace_from(template, tmp_path)
    settings = fault_settings(project, orthanc, standin_xnat, retries=0)
    config = write_config(settings, project / "pacs2xnat.toml")
    cli = CliRunner()
    taken = template.studies[0]
    with standin_xnat.store.lock:
        other = standin_xnat.store.archive(
            Session("", "HNC", "", taken.accession_number, "1.2.3.999", "CT"), "OTHER", False
        )
    standin_xnat.faults.fail_next(500, 1, "/data/services/import")
    first = cli.invoke(app, ["--config", str(config), "--json", "load"])
    assert first.exit_code == 1, first.output
    reasons = {a["study_instance_uid"]: a["reason_category"] for a in attempts(settings)}
    assert reasons[taken.study_instance_uid] == "xnat_conflict"
    assert sorted(map(str, reasons.values())) == ["None", "xnat_conflict", "xnat_unavailable"]
    flaky = next(s for s in template.studies if reasons[s.study_instance_uid] == "xnat_unavailable")

    again = cli.invoke(app, ["--config", str(config), "--json", "failures", "--retry"])
    assert again.exit_code == 0, again.output
    retried = json.loads(again.stdout)["retry"]
    assert (retried["retryable"], retried["loaded"], retried["failed"]) == (1, 1, 0)
    assert sessions_by_uid(standin_xnat)[flaky.study_instance_uid] == 1
    assert [a["study_instance_uid"] for a in attempts(settings)].count(
        taken.study_instance_uid
    ) == 1  # the permanent failure was not sent again

    with standin_xnat.store.lock:
        standin_xnat.store.delete_session(other.id)
    today = dt.datetime.now(dt.UTC).date().isoformat()
    write_resolutions(
        project,
        [{"accession_number": taken.accession_number, "outcome": "retry",
          "note": "wrong session removed from XNAT", "decided_on": today, "decided_by": "admin"}],
    )  # fmt: skip
    last = cli.invoke(app, ["--config", str(config), "--json", "failures", "--retry"])
    assert last.exit_code == 0, last.output
    assert json.loads(last.stdout)["retry"]["loaded"] == 1
    seen = assert_nothing_lost(settings, standin_xnat, template.studies)
    assert not seen["register"]
