"""SIGKILL of ``python -m connectors.app.cli load`` (a real subprocess: sync, dbt build, load) at
three moments detected from the outside, then a rerun: during a retrieve (a DICOM file appears
in the work folder), during an upload (the stand-in XNAT is serving an import), and between
studies (one study uploaded, the next one's subject request in flight). Each ends with
``assert_nothing_lost``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from connectors import PROJECT_ROOT
from connectors.load.runner import run_load
from tests.support.fault_helpers import (
    Template,
    assert_nothing_lost,
    attempts,
    fault_settings,
    invoke,
    sessions_by_uid,
    workspace_from,
    write_config,
)
from tests.support.fault_proxy import FaultProxy
from tests.support.xnat_fixtures import StandinHandle

pytestmark = [pytest.mark.orthanc, pytest.mark.slow]

IMPORT = "/data/services/import"
SUBJECTS = "/data/projects/HNC/subjects/"
WAIT_SECONDS = 240.0  # the subprocess imports dbt and builds the manifest first


@pytest.fixture
def proxy(orthanc: Any) -> Iterator[FaultProxy]:
    p = FaultProxy(orthanc.host, orthanc.port)
    p.aet = orthanc.aet
    yield p
    p.close()


def _start_load(settings: Any, project: Path) -> subprocess.Popen[bytes]:
    config = write_config(settings, project / "pacs2xnat.toml")
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    log = open(project / "load.out", "wb")  # noqa: SIM115 - handed to the child process
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "connectors.app.cli", "--config", str(config), "load"],
            cwd=project,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    finally:
        log.close()


def _came(moment: Callable[[], bool]) -> bool:
    """The moment, looked for in folders the loader creates and removes while we look."""
    try:
        return moment()
    except FileNotFoundError:  # a study's folder went away during the scan
        return False


def _kill_when(proc: subprocess.Popen[bytes], moment: Callable[[], bool], project: Path) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not _came(moment):
        if proc.poll() is not None:
            out = (project / "load.out").read_text(errors="replace")[-3000:]
            pytest.fail(f"load ended (exit {proc.returncode}) before the moment came:\n{out}")
        assert time.monotonic() < deadline, "the moment to kill never came"
        time.sleep(0.01)
    children = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # The loader's retrieve workers die with it (PR_SET_PDEATHSIG): none may go on writing
    # patient files into the dead run's folder.
    deadline = time.monotonic() + 10
    while any(_alive(c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [c for c in children if _alive(c)], "retrieve workers outlived the killed load"


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _children(pid: int) -> list[int]:
    """The processes ``pid`` started (its retrieve workers), from /proc."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def _killed_run(settings: Any) -> dict[str, Any]:
    """The killed invocation's runs row: still 'running' (it never finished)."""
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        row = con.execute(
            "select run_id, outcome from raw.runs where command = 'load' order by started_at"
        ).fetchall()
    finally:
        con.close()
    assert row
    assert row[-1][1] == "running"
    return {"run_id": row[-1][0]}


def _rerun(settings: Any, standin: StandinHandle, template: Template) -> dict[str, Any]:
    standin.faults.reset()
    app = standin.server.app
    deadline = time.monotonic() + 30
    while any(n for n in app.in_flight.values()) and time.monotonic() < deadline:
        time.sleep(0.05)  # let the stand-in finish what the dead client had sent
    before = sessions_by_uid(standin)
    # the killed run built the manifest before loading; the rerun reads it as it is
    code, run, err = invoke(
        settings, "load", lambda rc: run_load(rc, "direct", build_manifest=False)
    )
    assert code == 0, err
    assert run["already_present"] == sum(before.values())
    assert run["loaded"] == len(template.studies) - sum(before.values())
    seen = assert_nothing_lost(settings, standin, template.studies, runs=[run])
    assert all(seen["in_xnat"][s.study_instance_uid] == 1 for s in template.studies)
    return seen


def test_sigkill_during_retrieve_then_rerun(
    template: Template, proxy: FaultProxy, standin_xnat: StandinHandle, tmp_path: Path
) -> None:
    """It loses nothing when killed while a study is being retrieved: nothing reached XNAT,
    no attempt row is half-written, and the rerun loads every study once."""
    project = workspace_from(template, tmp_path)
    settings = fault_settings(project, proxy, standin_xnat)
    proxy.delay = 0.2  # slow PACS answers: the kill lands inside a C-GET
    proc = _start_load(settings, project)
    work = settings.work_dir
    _kill_when(proc, lambda: any(p.suffix == ".dcm" for p in work.rglob("*")), project)
    assert any(work.rglob("*.dcm"))  # the dead run's files stay until the next run starts
    assert not [s for s in standin_xnat.server.app.request_log if s[1] == IMPORT]
    killed = _killed_run(settings)
    assert not [a for a in attempts(settings) if a["run_id"] == killed["run_id"]]
    proxy.delay = 0.0
    _rerun(settings, standin_xnat, template)


def test_sigkill_during_upload_then_rerun(
    template: Template, orthanc: Any, standin_xnat: StandinHandle, tmp_path: Path
) -> None:
    """It loses nothing when killed while XNAT is receiving an import: whether or not XNAT
    archived that study, the rerun records it once (already_present or loaded)."""
    project = workspace_from(template, tmp_path)
    settings = fault_settings(project, orthanc, standin_xnat)
    standin_xnat.faults.slow(3.0, IMPORT)
    app = standin_xnat.server.app
    proc = _start_load(settings, project)
    _kill_when(proc, lambda: app.in_flight.get(IMPORT, 0) > 0, project)
    killed = _killed_run(settings)
    assert not [a for a in attempts(settings) if a["run_id"] == killed["run_id"]]
    _rerun(settings, standin_xnat, template)


def test_sigkill_between_studies_then_rerun(
    template: Template, orthanc: Any, standin_xnat: StandinHandle, tmp_path: Path
) -> None:
    """It loses nothing when killed after one study was loaded and recorded and before the
    next one's upload began: the rerun finds the first already present and loads the rest.
    One upload at a time, so that the second begins only once the first is recorded (killed
    with two in flight: tests/load/test_recovery.py)."""
    project = workspace_from(template, tmp_path)
    settings = fault_settings(project, orthanc, standin_xnat, uploads_in_flight=1)
    standin_xnat.faults.slow(5.0, SUBJECTS, after=1)  # the second study's subject request
    app = standin_xnat.server.app

    def between() -> bool:
        loaded = any(s[1] == IMPORT and s[2] == 200 for s in app.request_log)
        waiting = any(k.startswith(SUBJECTS) and n > 0 for k, n in list(app.in_flight.items()))
        return loaded and waiting

    proc = _start_load(settings, project)
    _kill_when(proc, between, project)
    killed = _killed_run(settings)
    done = [a for a in attempts(settings) if a["run_id"] == killed["run_id"]]
    assert [a["outcome"] for a in done] == ["loaded"]
    assert sum(sessions_by_uid(standin_xnat).values()) == 1
    _rerun(settings, standin_xnat, template)
