"""``pacs2xnat load`` when things break: SIGKILL in the middle of an upload then a rerun,
XNAT down before the start, credentials refused in the middle of a run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from connectors.app.cli import app
from connectors.config import load_settings
from connectors.errors import XnatUnreachable
from connectors.load.runner import run_load
from connectors.testbed.cohort import Cohort
from connectors.warehouse.runs import RunContext
from tests.support.load_helpers import attempts, expected_files, pick_studies, write_manifest
from tests.support.xnat_fixtures import StandinHandle

IMPORT = "/data/services/import"
CHILD = """
import sys
from pathlib import Path
from connectors.config import load_settings
from connectors.load.runner import run_load
from connectors.warehouse.runs import RunContext
rc = RunContext(settings=load_settings(Path(sys.argv[1])), command="load", arguments=[])
rc.start()
run_load(rc, "direct", build_manifest=False)
rc.finish("success", 0)
"""


def _config(
    tmp: Path, orthanc: Any, standin: StandinHandle, retries: int = 2, uploads_in_flight: int = 2
) -> Path:
    cfg = tmp / "pacs2xnat.toml"
    cfg.write_text(
        f'[pacs]\nhost = "{orthanc.host}"\nport = {orthanc.port}\ncalled_aet = "{orthanc.aet}"\n'
        "acse_timeout = 5.0\ndimse_timeout = 15.0\nnetwork_timeout = 15.0\n"
        f'[xnat]\nurl = "{standin.url}"\nproject = "HNC"\ntimeout = 20.0\n'
        '[warehouse]\npath = "warehouse/pacs2xnat.duckdb"\n'
        f'[load]\nwork_dir = "work"\nretries = {retries}\nbackoff_seconds = 0.05\n'
        f"uploads_in_flight = {uploads_in_flight}\n"
    )
    return cfg


def _wait(predicate: Any, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("the condition never came true")
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.orthanc
@pytest.mark.parametrize("in_flight", [1, 2])
def test_rerun_after_sigkill_mid_upload_loads_exactly_what_is_missing(
    orthanc: Any, pacs_cohort: Cohort, standin_xnat: StandinHandle, tmp_path: Path, in_flight: int
) -> None:
    """It is killed (SIGKILL) while XNAT is receiving the third upload (and the fourth, with
    two uploads in flight); the rerun leaves every study in XNAT exactly once, with all its
    files, and uploads nothing twice."""
    studies = pick_studies(pacs_cohort, 5, offset=2)
    cfg = _config(tmp_path, orthanc, standin_xnat, uploads_in_flight=in_flight)
    settings = load_settings(cfg)
    write_manifest(settings, pacs_cohort, studies)
    app_ = standin_xnat.server.app
    standin_xnat.faults.slow(3.0, IMPORT, after=2)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(cfg)], cwd=Path(__file__).parents[2], env=os.environ
    )
    try:
        _wait(lambda: app_.in_flight.get(IMPORT, 0) >= in_flight and len(_imports(app_)) >= 2)
        killed_in_flight = app_.in_flight.get(IMPORT, 0)  # each slowed 3 s: still so
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    standin_xnat.faults.reset()
    _wait(lambda: app_.in_flight.get(IMPORT, 0) == 0)  # XNAT finishes what it was given
    before = {s.label for s in standin_xnat.store.sessions.values()}
    assert killed_in_flight == in_flight
    assert 2 <= len(before) <= 2 + in_flight

    rc = RunContext(settings=settings, command="load", arguments=[])
    rc.start()
    try:
        summary = run_load(rc, "direct", build_manifest=False)
    finally:
        rc.finish("success", 0)
    assert summary["failed"] == 0
    assert summary["loaded"] == 5 - len(before)
    assert summary["already_present"] == len(before)
    sessions = list(standin_xnat.store.sessions.values())
    assert sorted(s.label for s in sessions) == sorted(s.accession_number for s in studies)
    by_label = {s.label: s for s in sessions}
    for study in studies:
        assert by_label[study.accession_number].file_count() == expected_files(study)
    rerun = [a for a in attempts(settings) if a["run_id"] == rc.run_id]
    assert {a["outcome"] for a in rerun} <= {"loaded", "already_present"}
    # the killed run's uploads in flight, then the rest
    assert len(_imports(app_)) - 2 == killed_in_flight + summary["loaded"]
    assert not any((tmp_path / "work").rglob("*.dcm"))  # the killed run's files too


def _imports(app_: Any) -> list[Any]:
    return [r for r in app_.request_log if r[1] == IMPORT]


def test_xnat_down_exits_3_before_anything_is_loaded(
    standin_xnat: StandinHandle, workspace: Path
) -> None:
    """It stops with exit code 3 and a message naming XNAT when XNAT does not answer."""

    class _NoPacs:
        host, port, aet = "127.0.0.1", 9, "NOPACS"

    cfg = _config(workspace, _NoPacs(), standin_xnat)
    standin_xnat.server.stop()
    result = CliRunner().invoke(app, ["--config", str(cfg), "load"])
    assert result.exit_code == 3
    assert "does not answer" in result.stderr
    assert attempts(load_settings(cfg)) == []


@pytest.mark.slow
@pytest.mark.orthanc
def test_credentials_refused_mid_run_stop_the_run(
    orthanc: Any, pacs_cohort: Cohort, standin_xnat: StandinHandle, tmp_path: Path
) -> None:
    """It stops the run as XnatUnreachable (exit 3) when XNAT starts answering 401, instead
    of failing every remaining study one by one."""
    settings = load_settings(_config(tmp_path, orthanc, standin_xnat))
    write_manifest(settings, pacs_cohort, pick_studies(pacs_cohort, 2, offset=14))
    standin_xnat.faults.unauthorized_after = 17  # 13 to log in, sync and check, 4 per study
    with pytest.raises(XnatUnreachable, match="401"):
        run_load(
            RunContext(settings=settings, command="load", arguments=[]),
            "direct",
            build_manifest=False,
        )
    log = standin_xnat.server.app.request_log
    assert any(r[1] == IMPORT and r[2] == 200 for r in log)  # one study was loaded first
