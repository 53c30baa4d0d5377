"""It runs the whole cycle with `pacs2xnat run` against real Orthanc and the stand-in XNAT,
stops where asked, stops on a failing step, continues after it, and `doctor` says what is wrong."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from connectors.app.cli import app
from connectors.app.cycle import AFTER_LOAD, BEFORE_LOAD
from connectors.clock import use_clock
from connectors.config import load_settings
from connectors.pacs.query import PLAN_MODELS
from connectors.testbed.cohort import Cohort
from connectors.testbed.workbooks import write_master_list
from connectors.warehouse.backend import open_warehouse
from connectors.warehouse.store import Warehouse
from tests.support.fake_clock import FakeClock
from tests.support.load_helpers import expected_files
from tests.support.pacs_fixtures import write_query_config

pytestmark = pytest.mark.slow  # end to end: tests/project/test_markers.py


def _config(workspace: Path, orthanc: Any, xnat: Any, warehouse_url: str = "", **pacs: Any) -> Path:
    path = write_query_config(workspace, orthanc, **pacs)
    if warehouse_url:  # the shared warehouse on PostgreSQL instead of the DuckDB file
        text = path.read_text(encoding="utf-8")
        path.write_text(text.replace("[pacs]", f'url = "{warehouse_url}"\n\n[pacs]', 1))
    with open(path, "a", encoding="utf-8") as f:
        f.write(
            f'\n[xnat]\nurl = "{xnat.url}"\nproject = "{xnat.project}"\ntimeout = 20.0\n'
            "\n[load]\nretries = 1\nbackoff_seconds = 0.1\n"
        )
    return path


def _warehouse(workspace: Path) -> Warehouse:
    """The warehouse the workspace's config names (the DuckDB file or PostgreSQL)."""
    return open_warehouse(load_settings(workspace / "pacs2xnat.toml"))


def _runs(workspace: Path) -> list[tuple[str, str, int, dict[str, Any]]]:
    with _warehouse(workspace).connect(read_only=True) as c:
        rows = c.execute(
            "select run_id, outcome, exit_code, summary from raw.runs where command = 'run' "
            "order by started_at"
        ).fetchall()
    return [(r[0], r[1], r[2], json.loads(r[3] or "{}")) for r in rows]


@pytest.fixture
def warehouse_url(request: pytest.FixtureRequest) -> str:
    """'' (the DuckDB file), or with ``indirect`` param "postgresql" a fresh PostgreSQL
    database on the session's real server."""
    if getattr(request, "param", "duckdb") == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return ""


@pytest.fixture
def cycle_workspace(
    request: pytest.FixtureRequest,
    workspace: Path,
    orthanc: Any,
    standin_xnat: Any,
    pacs_cohort: Cohort,
    warehouse_url: str,
) -> Path:
    protocol = getattr(request, "param", "dimse")  # the whole cycle by DICOMweb too (issue 15)
    pacs: dict[str, Any] = {  # and with dcmtk's tools for the C-FINDs and the C-GETs (issue 12)
        "dimse": {},
        "dicomweb": {"protocol": "dicomweb", "dicomweb_url": orthanc.dicomweb_url},
        "dcmtk": {"query_backend": "dcmtk", "retrieve_backend": "dcmtk"},
    }[protocol]
    _config(workspace, orthanc, standin_xnat, warehouse_url, **pacs)
    master = write_master_list(pacs_cohort, workspace / "master.xlsx")
    res = CliRunner().invoke(app, ["patients", "import", str(master)])
    assert res.exit_code == 0, res.output
    return workspace


def _dbt_builds(workspace: Path) -> list[tuple[str, str]]:
    with _warehouse(workspace).connect(read_only=True) as con:
        rows = con.execute(
            "select run_id, command from raw.dbt_builds order by finished_at"
        ).fetchall()
    return [tuple(r) for r in rows]


@pytest.mark.parametrize(
    ("cycle_workspace", "warehouse_url"),
    [("dimse", "duckdb"), ("dicomweb", "duckdb"), ("dcmtk", "duckdb"), ("dimse", "postgresql")],
    indirect=True,
)
def test_run_stops_where_asked_then_resumes_after_a_failed_step(
    cycle_workspace: Path, standin_xnat: Any, pacs_cohort: Cohort
) -> None:
    cli = CliRunner()
    res = cli.invoke(app, ["--verbose", "run", "--until", "export"])  # DICOM detail in the log
    assert res.exit_code == 0, res.output
    (first,) = _runs(cycle_workspace)
    assert first[3]["steps_done"] == ["query", "build", "export"]
    assert list((cycle_workspace / "warehouse" / "exports").glob("ingest_*.csv"))

    standin_xnat.server.stop()  # XNAT down: the load step fails, the cycle stops there
    res = cli.invoke(app, ["run"])
    assert res.exit_code == 3, res.output
    assert "XNAT" in res.output
    second = _runs(cycle_workspace)[1]
    assert second[1] == "failed"
    assert second[3]["steps_done"] == ["query", "build", "export"]

    standin_xnat.server.start()
    res = cli.invoke(app, ["run"])
    assert res.exit_code == 0, res.output
    third = _runs(cycle_workspace)[2]
    assert third[3]["resumed_after"] == ["query", "build", "export"]
    assert third[3]["steps_done"] == [
        "query",
        "build",
        "export",
        "load",
        "sync",
        "rebuild",
        "report",
    ]
    # dbt only as often as it must: the plan's models (no tests) and one build before the
    # load, one after it; never the unit tests, never the manifest again inside the load
    builds = _dbt_builds(cycle_workspace)
    assert builds == [
        (first[0], " ".join(PLAN_MODELS.dbt_args())),
        (first[0], " ".join(BEFORE_LOAD.dbt_args())),
        (third[0], " ".join(AFTER_LOAD.dbt_args())),
    ]
    assert all(re.search(r"--exclude-resource-type [^-]*unit_test", cmd) for _, cmd in builds)
    with _warehouse(cycle_workspace).connect(read_only=True) as con:
        asked_again = con.execute(
            "select count(*) from raw.pacs_queries where run_id = ?", [third[0]]
        ).fetchone()
        selected = con.execute(
            "select count(*) from main.pacs_study_selection where selection_status = 'selected'"
        ).fetchone()
        present = con.execute(
            "select count(*) from main.reconciliation where reconciliation_status = 'present'"
        ).fetchone()
    assert tuple(asked_again) == (0,)  # the query step was not repeated
    assert selected is not None
    assert selected[0] > 0
    assert tuple(present) == tuple(selected)
    labels = [s.label for s in standin_xnat.store.sessions.values()]
    assert len(labels) == len(set(labels)) == selected[0]
    register = cli.invoke(app, ["--json", "failures"])  # reads its mart on either warehouse
    assert register.exit_code == 0, register.output
    open_rows = _warehouse(cycle_workspace).read_relation("main.ingest_failures", "where is_open")
    assert json.loads(register.output)["open"] == len(open_rows)
    _assert_logs_hold_no_secrets(cycle_workspace, standin_xnat.password, pacs_cohort)


def test_run_outside_the_windows_pauses_and_the_next_run_continues(
    cycle_workspace: Path, orthanc: Any, standin_xnat: Any
) -> None:
    """--no-wait at noon on a Tuesday: the run stops before asking the PACS, recorded
    'paused' with when it may go on; at 20:00 the next run goes on."""
    _config(cycle_workspace, orthanc, standin_xnat, windows=["Mon-Fri 19:00-07:00"])
    cli = CliRunner()
    with use_clock(FakeClock(dt.datetime(2026, 12, 1, 12, 0))):
        res = cli.invoke(app, ["--json", "run", "--no-wait"])
    assert res.exit_code == 0, res.output
    assert '"paused_until": "2026-12-01T19:00"' in res.output
    (paused,) = _runs(cycle_workspace)
    assert (paused[1], paused[3]["steps_done"]) == ("paused", [])
    with use_clock(FakeClock(dt.datetime(2026, 12, 1, 20, 0))):
        res = cli.invoke(app, ["run", "--no-wait", "--until", "query"])
    assert res.exit_code == 0, res.output
    went_on = _runs(cycle_workspace)[1]
    assert (went_on[1], went_on[3]["steps_done"]) == ("success", ["query"])
    assert went_on[3]["steps"]["query"]["patients_queried"] > 0


@pytest.mark.parametrize("cycle_workspace", ["dimse", "dcmtk"], indirect=True)
def test_doctor_passes_every_check_against_real_servers(cycle_workspace: Path) -> None:
    res = CliRunner().invoke(app, ["doctor"])
    assert res.exit_code == 0, res.output
    if "query_backend" in (cycle_workspace / "pacs2xnat.toml").read_text(encoding="utf-8"):
        assert "C-FIND by /usr/bin/findscu accepted" in res.output  # the probe took findscu
    for name in (
        "config",
        "warehouse writable",
        "dbt parse",
        "PACS C-ECHO",
        "PACS C-FIND",
        "PACS retrieve",
        "PACS offers",
        "XNAT login and project",
    ):
        assert f"pass  {name}:" in res.output, name


@pytest.mark.parametrize("cycle_workspace", ["dicomweb"], indirect=True)
def test_doctor_checks_dicomweb(cycle_workspace: Path) -> None:
    res = CliRunner().invoke(app, ["doctor"])
    assert res.exit_code == 0, res.output
    assert "pass  PACS DICOMweb QIDO-RS:" in res.output
    assert "pass  PACS DICOMweb WADO-RS:" in res.output
    assert "C-ECHO" not in res.output


def test_doctor_names_what_fails_and_how_to_fix_it(
    cycle_workspace: Path, orthanc: Any, standin_xnat: Any
) -> None:
    _config(
        cycle_workspace, orthanc, standin_xnat, retrieve="c-move", move_destination="NOBODY", port=1
    )
    standin_xnat.server.stop()
    res = CliRunner().invoke(app, ["doctor"])
    assert res.exit_code == 3, res.output
    assert "FAIL  PACS C-ECHO:" in res.output
    assert "fix: check [pacs] host/port/called_aet" in res.output
    assert "FAIL  XNAT login and project:" in res.output
    assert "pass  warehouse writable:" in res.output


def _assert_logs_hold_no_secrets(workspace: Path, password: str, cohort: Cohort) -> None:
    """Every log the cycle wrote (ours and dbt's): no password, no patient's full name."""
    logs = [p for p in workspace.rglob("*.log") if "orthanc" not in p.parts]
    assert logs
    names = set()
    for p in cohort.patients:
        names |= {p.dicom_name, p.list_name, f"{p.given} {p.family}", f"{p.family} {p.given}"}
    for log in logs:
        text = log.read_text(encoding="utf-8", errors="replace")
        assert password not in text, log
        found = [n for n in names if n.lower() in text.lower()]
        assert found == [], (log, found)


class _EndsOnceLoading(FakeClock):
    """06:00 on a Monday (inside "Mon-Fri 19:00-07:00") until the load's first instance is on
    disk, then 07:00: the window ends while the load is in the middle of a study."""

    def __init__(self, work: Path) -> None:
        super().__init__(dt.datetime(2026, 11, 30, 6, 0))
        self.work = work

    def now(self) -> dt.datetime:
        if self.t.hour < 7 and self.work.is_dir() and any(self.work.rglob("*.dcm")):
            self.t = dt.datetime(2026, 11, 30, 7, 0)
        return super().now()


def test_a_run_paused_in_the_middle_of_its_load_continues_loading_each_study_once(
    workspace: Path, orthanc: Any, standin_xnat: Any, pacs_cohort: Cohort
) -> None:
    """One patient (five studies), over DICOMweb, --no-wait: the window ends while the load
    has studies part way; the run is recorded 'paused' with what arrived kept, and the next run
    at 19:05 continues its load: every selected study in XNAT once, sent once."""
    web = {"protocol": "dicomweb", "dicomweb_url": orthanc.dicomweb_url}
    _config(workspace, orthanc, standin_xnat, windows=["Mon-Fri 19:00-07:00"], **web)
    patient = min(pacs_cohort.patients, key=lambda p: len(pacs_cohort.studies_of(p.mrn)))
    master = write_master_list(pacs_cohort, workspace / "master.xlsx", patients=[patient])
    cli = CliRunner()
    assert cli.invoke(app, ["patients", "import", str(master)]).exit_code == 0
    work = load_settings(workspace / "pacs2xnat.toml").work_dir
    with use_clock(_EndsOnceLoading(work)):
        res = cli.invoke(app, ["--json", "run", "--no-wait"])
    assert res.exit_code == 0, res.output
    assert '"paused_until": "2026-11-30T19:00"' in res.output
    (paused,) = _runs(workspace)
    assert paused[1] == "paused"
    assert paused[3]["steps_done"] == ["query", "build", "export"]
    assert paused[3]["steps"]["load"]["loaded"] == 0
    records = [json.loads(p.read_text()) for p in (work / "paused").glob("*.json")]
    files = {s.study_instance_uid: expected_files(s) for s in pacs_cohort.studies_of(patient.mrn)}
    assert records  # the study in hand, part way
    assert all(0 < r["instances_kept"] < files[r["study_instance_uid"]] for r in records)
    assert standin_xnat.store.sessions == {}

    with use_clock(FakeClock(dt.datetime(2026, 11, 30, 19, 5))):
        res = cli.invoke(app, ["run", "--no-wait", "--until", "load"])  # the rest: as always
    assert res.exit_code == 0, res.output
    went_on = _runs(workspace)[1]
    assert went_on[1] == "success"
    assert went_on[3]["resumed_after"] == ["query", "build", "export"]
    assert went_on[3]["steps_done"] == ["query", "build", "export", "load"]
    selected = _warehouse(workspace).read_relation(
        "main.pacs_study_selection", "where selection_status = 'selected'"
    )
    assert 0 < len(selected) == went_on[3]["steps"]["load"]["loaded"]
    uids = sorted(s.uid for s in standin_xnat.store.sessions.values())
    assert uids == sorted(r["study_instance_uid"] for r in selected)  # each study once
    imports = [r for r in standin_xnat.server.app.request_log if r[1] == "/data/services/import"]
    assert len(imports) == len(selected)  # each sent once
    assert list((work / "paused").iterdir()) == []  # what was kept went into the upload
