"""``pacs2xnat query`` end to end: the SQL plan, a real PACS, the warehouse, exit codes."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest
from typer.testing import CliRunner

from connectors.app.cli import app
from connectors.clock import TODAY_ENV
from connectors.testbed.cohort import Cohort, raw_master_rows
from connectors.testbed.orthanc import free_port
from connectors.warehouse.store import Warehouse
from tests.support.pacs_fixtures import master_patient_rows, write_query_config

DB = Path("warehouse") / "pacs2xnat.duckdb"


def _seed_master_list(ws: Path, cohort: Cohort) -> None:
    Warehouse(ws / DB).append("master_patients", master_patient_rows(cohort))


def _sql(ws: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(ws / DB), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def _summary(res: Any) -> dict[str, Any]:
    out = res.stdout
    return json.loads(out[out.index("{") :])


def _active(cohort: Cohort) -> list[str]:
    return sorted(p.mrn for p in cohort.patients if p.status == "active")


def _active_studies(cohort: Cohort) -> set[str]:
    active = set(_active(cohort))
    return {s.study_instance_uid for s in cohort.studies if s.mrn in active}


@pytest.mark.slow
@pytest.mark.orthanc
@pytest.mark.parametrize("backend", ["pynetdicom", "dcmtk"])
def test_query_asks_every_active_patient_once_even_when_capped(
    workspace: Path,
    cli: CliRunner,
    orthanc_factory: Any,
    pacs_files: Any,
    pacs_cohort: Cohort,
    backend: str,
) -> None:
    """It asks every active patient (never the withdrawn one) over all dates, splits Orthanc's
    capped answers so every study arrives exactly once, and a rerun the same day asks nothing;
    with findscu (``query_backend = "dcmtk"``) too, the capped patients asked again."""
    capped = orthanc_factory(pacs_files, limit_find_results=4)
    write_query_config(workspace, capped, query_backend=backend)
    _seed_master_list(workspace, pacs_cohort)

    res = cli.invoke(app, ["--json", "query"])
    assert res.exit_code == 0, res.output
    summary = _summary(res)
    expected = _active_studies(pacs_cohort)
    assert summary["patients_queried"] == len(_active(pacs_cohort))
    assert summary["patients_failed"] == 0
    assert summary["studies_found"] == len(expected)
    assert summary["sub_queries"] > summary["patients_queried"]  # the cap forced splits

    uids = [r[0] for r in _sql(workspace, "select study_instance_uid from raw.pacs_studies")]
    assert sorted(uids) == sorted(expected)
    asked = {r[0] for r in _sql(workspace, "select mrn from raw.pacs_queries")}
    assert asked == set(_active(pacs_cohort))
    windows = _sql(workspace, "select distinct window_from, window_to from raw.pacs_queries")
    assert windows == [(None, dt.date.today())]
    for p in pacs_cohort.patients:
        if p.status == "active" and not p.dicom_name.isascii():
            names = _sql(
                workspace,
                "select distinct patient_name from raw.pacs_studies where query_mrn = ?",
                [p.mrn],
            )
            assert names == [(p.dicom_name,)]

    again = cli.invoke(app, ["--json", "query"])
    assert again.exit_code == 0, again.output
    assert _summary(again)["patients_queried"] == 0
    assert _sql(workspace, "select count(*) from raw.pacs_queries") == [(len(asked),)]


@pytest.mark.slow
def test_ongoing_window_and_overrides_reach_the_pacs(
    workspace: Path, cli: CliRunner, demo_pacs: Any, pacs_cohort: Cohort
) -> None:
    """It asks an ongoing patient from the last window_to minus the overlap, and --since/--until
    replace the window; the PACS receives exactly those StudyDate ranges."""
    write_query_config(workspace, demo_pacs)
    _seed_master_list(workspace, pacs_cohort)
    ongoing, other = _active(pacs_cohort)[:2]
    last = dt.datetime(2025, 6, 1, 12, 0)
    Warehouse(workspace / DB).append(
        "pacs_queries",
        [
            {
                "run_id": "an-earlier-run",
                "loaded_at": last,
                "query_id": "an-earlier-run-q1",
                "mrn": ongoing,
                "window_from": None,
                "window_to": last.date(),
                "started_at": last,
                "finished_at": last,
                "outcome": "success",
                "studies_found": 0,
                "sub_queries": 1,
            }
        ],
    )
    res = cli.invoke(app, ["query", "--mrn", ongoing])
    assert res.exit_code == 0, res.output
    start = last.date() - dt.timedelta(days=14)
    [req] = demo_pacs.requests_of("C-FIND")
    assert req["identifier"]["StudyDate"] == start.strftime("%Y%m%d") + "-"
    got = {r[0] for r in _sql(workspace, "select study_instance_uid from raw.pacs_studies")}
    assert got == {
        s.study_instance_uid
        for s in pacs_cohort.studies_of(ongoing)
        if s.study_date is not None and s.study_date >= start
    }
    recorded = _sql(
        workspace,
        "select window_from, window_to from raw.pacs_queries where run_id <> 'an-earlier-run'",
    )
    assert recorded == [(start, dt.date.today())]

    res = cli.invoke(
        app, ["query", "--mrn", other, "--since", "2024-01-01", "--until", "2024-12-31"]
    )
    assert res.exit_code == 0, res.output
    assert demo_pacs.requests_of("C-FIND")[-1]["identifier"]["StudyDate"] == "20240101-20241231"
    recorded = _sql(
        workspace, "select window_from, window_to from raw.pacs_queries where mrn = ?", [other]
    )
    assert recorded == [(dt.date(2024, 1, 1), dt.date(2024, 12, 31))]


@pytest.mark.slow
def test_the_plan_needs_no_dbt_run_when_only_raw_rows_changed(
    workspace: Path, cli: CliRunner, demo_pacs: Any, pacs_cohort: Cohort
) -> None:
    """The plan is a view: after a new master-list snapshot the next query reads it with no
    dbt run and asks only the patient the import added; a plan view dropped by hand is built
    again, and so is the plan when a var (the overlap) changed."""
    config = write_query_config(workspace, demo_pacs)
    newcomer = _active(pacs_cohort)[-1]
    rows = master_patient_rows(pacs_cohort)
    Warehouse(workspace / DB).append("master_patients", [r for r in rows if r["mrn"] != newcomer])
    first = cli.invoke(app, ["--json", "query"])
    assert first.exit_code == 0, first.output
    assert _summary(first)["plan_built"] is True
    assert _summary(first)["patients_queried"] == len(_active(pacs_cohort)) - 1

    later = dt.datetime(2026, 2, 1, 9, 0)
    Warehouse(workspace / DB).append(
        "master_patients", raw_master_rows(pacs_cohort, "seed-master-2", later)
    )
    second = cli.invoke(app, ["--json", "query"])
    assert second.exit_code == 0, second.output
    assert _summary(second)["plan_built"] is False
    assert _summary(second)["patients_queried"] == 1
    assert _sql(workspace, "select distinct query_mrn from raw.pacs_studies where run_id = "
                "(select run_id from raw.pacs_queries order by loaded_at desc limit 1)") == [
        (newcomer,)
    ]  # fmt: skip

    with duckdb.connect(str(workspace / DB)) as con:
        con.execute("drop view main.pacs_query_plan")
    third = cli.invoke(app, ["--json", "query"])
    assert third.exit_code == 0, third.output
    assert (_summary(third)["plan_built"], _summary(third)["patients_queried"]) == (True, 0)

    config.write_text(config.read_text() + "\n[cycle]\noverlap_days = 7\n", encoding="utf-8")
    fourth = cli.invoke(app, ["--json", "query"])
    assert fourth.exit_code == 0, fourth.output
    assert _summary(fourth)["plan_built"] is True


def _query_in(ws: Path, tz: str) -> dict[str, Any]:
    """``pacs2xnat --json query`` in a child process whose clock is in time zone ``tz`` (the
    child's date and its DuckDB's ``current_date`` both follow TZ), today not pinned."""
    env = {k: v for k, v in os.environ.items() if k != TODAY_ENV} | {"TZ": tz}
    res = subprocess.run(
        [sys.executable, "-m", "connectors.app.cli", "--json", "query"],
        cwd=ws,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    return _summary(res)


@pytest.mark.slow
def test_the_plan_built_one_day_is_read_the_next_with_no_dbt_run(
    workspace: Path, demo_pacs: Any, pacs_cohort: Cohort
) -> None:
    """Unpinned, "today" is the warehouse's ``current_date``, not a var: the plan's views
    built on one day are read on a later one with no dbt run, and that query covers up to the
    later day. Two time zones 26 hours apart stand for two days."""
    write_query_config(workspace, demo_pacs)
    _seed_master_list(workspace, pacs_cohort)
    first = _query_in(workspace, "Etc/GMT+12")  # UTC-12
    assert first["plan_built"] is True
    assert first["patients_queried"] == len(_active(pacs_cohort))

    def later_day() -> dt.date:
        return dt.datetime.now(dt.timezone(dt.timedelta(hours=14))).date()

    before = later_day()
    second = _query_in(workspace, "Etc/GMT-14")  # UTC+14: a day or two later
    after = later_day()
    assert second["plan_built"] is False
    assert second["patients_queried"] == len(_active(pacs_cohort))  # all due on the new day
    last_run = _sql(
        workspace,
        "select distinct window_to from raw.pacs_queries where run_id = "
        "(select run_id from raw.pacs_queries order by loaded_at desc limit 1)",
    )
    assert len(last_run) == 1
    assert last_run[0][0] in {before, after}
    first_run = _sql(workspace, "select min(window_to) from raw.pacs_queries")[0][0]
    assert first_run < last_run[0][0]


@pytest.mark.slow
def test_unknown_or_withdrawn_mrn_is_exit_2(
    workspace: Path, cli: CliRunner, demo_pacs: Any, pacs_cohort: Cohort
) -> None:
    """It refuses --mrn values not on the plan (unknown or withdrawn), naming them."""
    write_query_config(workspace, demo_pacs)
    _seed_master_list(workspace, pacs_cohort)
    withdrawn = next(p.mrn for p in pacs_cohort.patients if p.status == "withdrawn")
    res = cli.invoke(app, ["query", "--mrn", "NOSUCH01", "--mrn", withdrawn])
    assert res.exit_code == 2
    assert "NOSUCH01" in res.output
    assert withdrawn in res.output
    assert demo_pacs.requests_of("C-FIND") == []
    assert _sql(workspace, "select count(*) from raw.pacs_queries") == [(0,)]


def test_since_after_until_is_exit_2(workspace: Path, cli: CliRunner) -> None:
    """It refuses a window that ends before it starts, before contacting anything."""
    res = cli.invoke(app, ["query", "--since", "2026-05-01", "--until", "2026-04-01"])
    assert res.exit_code == 2
    assert "--since 2026-05-01 is after --until 2026-04-01" in res.output


def test_pacs_down_is_exit_3_with_a_clear_message(workspace: Path) -> None:
    """It exits 3 when nothing answers, naming host, port and both AE titles (real subprocess)."""

    class Down:
        host, port, aet = "127.0.0.1", free_port(), "HOSPITALPACS"

    write_query_config(workspace, Down(), acse_timeout=2.0)
    res = subprocess.run(
        [sys.executable, "-m", "connectors.app.cli", "query"],
        cwd=workspace,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 3
    assert f"127.0.0.1:{Down.port}" in res.stderr
    assert "'HOSPITALPACS'" in res.stderr
    assert "'PACS2XNAT'" in res.stderr


@pytest.mark.orthanc
def test_wrong_called_aet_is_exit_3(workspace: Path, cli: CliRunner, orthanc_factory: Any) -> None:
    """It exits 3 when the PACS rejects our association (Orthanc with DicomCheckCalledAet)."""
    strict = orthanc_factory(aet="STRICTPACS", check_called_aet=True)
    write_query_config(workspace, strict, called_aet="NOTTHEPACS")
    res = cli.invoke(app, ["query"])
    assert res.exit_code == 3
    assert "check that the PACS knows our AE title 'PACS2XNAT'" in res.output
    assert "'NOTTHEPACS'" in res.output


@pytest.mark.slow
def test_failure_status_is_recorded_and_exit_1(
    workspace: Path, cli: CliRunner, demo_pacs_factory: Any, pacs_cohort: Cohort
) -> None:
    """It records a PACS failure status per patient with its hex code, stores no study, exits
    1, and the plan still sees those patients as never queried."""
    pacs = demo_pacs_factory(find_status=0xC000)
    write_query_config(workspace, pacs)
    _seed_master_list(workspace, pacs_cohort)
    some = _active(pacs_cohort)[:2]
    res = cli.invoke(app, ["query", *[a for m in some for a in ("--mrn", m)]])
    assert res.exit_code == 1, res.output
    rows = _sql(workspace, "select mrn, outcome, status_code, message from raw.pacs_queries")
    assert sorted(r[0] for r in rows) == some
    assert {(r[1], r[2]) for r in rows} == {("failed", "0xC000")}
    assert all("0xC000" in r[3] for r in rows)
    assert _sql(workspace, "select count(*) from raw.pacs_studies") == [(0,)]


@pytest.mark.slow
def test_lost_association_is_reopened_and_retried_a_bounded_number_of_times(
    workspace: Path, cli: CliRunner, demo_pacs_factory: Any, pacs_cohort: Cohort
) -> None:
    """It reopens a lost association and asks again; after `retries` it records the failure."""
    pacs = demo_pacs_factory(abort_finds=3)
    write_query_config(workspace, pacs, retries=1, max_associations=1)
    _seed_master_list(workspace, pacs_cohort)
    a, b, c = _active(pacs_cohort)[:3]
    res = cli.invoke(app, ["query", "--mrn", a, "--mrn", b, "--mrn", c])
    assert res.exit_code == 1, res.output
    outcomes = dict(_sql(workspace, "select mrn, outcome from raw.pacs_queries"))
    assert outcomes == {a: "failed", b: "success", c: "success"}
    [message] = _sql(workspace, "select message from raw.pacs_queries where mrn = ?", [a])
    assert "association lost" in message[0]
    asked = [r["identifier"]["PatientID"] for r in pacs.requests_of("C-FIND")]
    assert asked == [a, a, b, b, c]
    got = {r[0] for r in _sql(workspace, "select study_instance_uid from raw.pacs_studies")}
    assert got == {s.study_instance_uid for m in (b, c) for s in pacs_cohort.studies_of(m)}


@pytest.mark.slow
def test_rerun_after_sigkill_asks_only_what_is_left(
    workspace: Path, cli: CliRunner, demo_pacs_factory: Any, pacs_cohort: Cohort
) -> None:
    """It keeps every patient committed before a SIGKILL, and the rerun asks only the rest:
    every study is then present exactly once."""
    pacs = demo_pacs_factory(latency=0.4)
    write_query_config(workspace, pacs, max_associations=1)
    _seed_master_list(workspace, pacs_cohort)
    proc = subprocess.Popen(
        [sys.executable, "-m", "connectors.app.cli", "query"],
        cwd=workspace,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while len(pacs.requests_of("C-FIND")) < 6 and time.monotonic() < deadline:
            assert proc.poll() is None, "query finished before it could be killed"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    first_asks = len(pacs.requests_of("C-FIND"))
    assert 6 <= first_asks < len(_active(pacs_cohort))
    done = {
        r[0] for r in _sql(workspace, "select mrn from raw.pacs_queries where outcome = 'success'")
    }
    assert done
    assert _sql(workspace, "select outcome from raw.runs where command = 'query'") == [("running",)]

    pacs.latency = 0.0
    res = cli.invoke(app, ["query"])
    assert res.exit_code == 0, res.output
    second = [r["identifier"]["PatientID"] for r in pacs.requests_of("C-FIND")[first_asks:]]
    assert sorted(second) == sorted(set(_active(pacs_cohort)) - done)
    per_study = _sql(
        workspace,
        "select s.study_instance_uid, count(*) from raw.pacs_studies s "
        "join raw.pacs_queries q using (query_id) where q.outcome = 'success' group by 1",
    )
    assert {uid for uid, _ in per_study} == _active_studies(pacs_cohort)
    assert {n for _, n in per_study} == {1}


# --------------------------------------------------------------------------- by findscu (issue 12)


@pytest.mark.slow
def test_query_by_findscu_splits_a_cap_that_ends_with_success(
    workspace: Path, cli: CliRunner, demo_pacs_factory: Any, pacs_cohort: Cohort
) -> None:
    """A PACS that stops quietly at its cap (Success after exactly ``find_result_cap``
    answers): those patients are asked again and split; every study arrives once."""
    pacs = demo_pacs_factory(result_cap=3, cap_status="success")
    write_query_config(workspace, pacs, query_backend="dcmtk", find_result_cap=3)
    _seed_master_list(workspace, pacs_cohort)
    some = _active(pacs_cohort)[:5]
    res = cli.invoke(app, ["--json", "query", *[a for m in some for a in ("--mrn", m)]])
    assert res.exit_code == 0, res.output
    expected = {s.study_instance_uid for m in some for s in pacs_cohort.studies_of(m)}
    assert max(len(pacs_cohort.studies_of(m)) for m in some) >= 3  # some were capped
    uids = [r[0] for r in _sql(workspace, "select study_instance_uid from raw.pacs_studies")]
    assert sorted(uids) == sorted(expected)


@pytest.mark.slow
@pytest.mark.parametrize(("status", "retried"), [(0xC000, False), (0xA700, True)])
def test_query_by_findscu_records_a_failure_status(
    workspace: Path,
    cli: CliRunner,
    demo_pacs_factory: Any,
    pacs_cohort: Cohort,
    status: int,
    retried: bool,
) -> None:
    """A failure status is recorded per patient with its hex code, exit 1; out of resources
    (transient) is asked again (over pynetdicom, ``retries`` times) before it is recorded."""
    pacs = demo_pacs_factory(find_status=status)
    write_query_config(workspace, pacs, query_backend="dcmtk", retries=1, max_associations=1)
    _seed_master_list(workspace, pacs_cohort)
    some = _active(pacs_cohort)[:2]
    res = cli.invoke(app, ["query", *[a for m in some for a in ("--mrn", m)]])
    assert res.exit_code == 1, res.output
    rows = _sql(workspace, "select mrn, outcome, status_code from raw.pacs_queries")
    assert sorted(rows) == [(m, "failed", f"0x{status:04X}") for m in some]
    asked = [r["identifier"]["PatientID"] for r in pacs.requests_of("C-FIND")]
    assert asked == (some + [m for m in some for _ in range(2)] if retried else some)
    assert _sql(workspace, "select count(*) from raw.pacs_studies") == [(0,)]


@pytest.mark.slow
def test_query_by_findscu_asks_again_what_a_lost_association_left(
    workspace: Path, cli: CliRunner, demo_pacs_factory: Any, pacs_cohort: Cohort
) -> None:
    """The association findscu had is aborted at its first C-FIND: that patient and the rest of
    the batch are asked again, each once, and every study arrives."""
    pacs = demo_pacs_factory(abort_finds=1)
    write_query_config(workspace, pacs, query_backend="dcmtk", max_associations=1)
    _seed_master_list(workspace, pacs_cohort)
    a, b, c = _active(pacs_cohort)[:3]
    res = cli.invoke(app, ["query", "--mrn", a, "--mrn", b, "--mrn", c])
    assert res.exit_code == 0, res.output
    outcomes = dict(_sql(workspace, "select mrn, outcome from raw.pacs_queries"))
    assert outcomes == {a: "success", b: "success", c: "success"}
    asked = [r["identifier"]["PatientID"] for r in pacs.requests_of("C-FIND")]
    assert asked == [a, a, b, c]
    got = {r[0] for r in _sql(workspace, "select study_instance_uid from raw.pacs_studies")}
    assert got == {s.study_instance_uid for m in (a, b, c) for s in pacs_cohort.studies_of(m)}
