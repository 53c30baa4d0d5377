"""Never locked out: a real ``pacs2xnat load`` subprocess, its PACS slowed to a stop (a proxy
holding Orthanc's answers), and the admin's commands run meanwhile (``rules import``,
``patients import``, ``build``, ``report``, ``failures``, ``export`` and plain ``dbt build``
in the project root): all succeed, the loader drops the study the new rules exclude but
finishes the one in hand, every attempt row is there, each study in XNAT once. And a loader
SIGKILLed while its journal holds rows (the warehouse held by another): the rerun writes them
first, once."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from typer.testing import CliRunner

from connectors import PROJECT_ROOT
from connectors.app.cli import app
from connectors.config import Settings
from connectors.load.runner import run_load
from connectors.testbed.workbooks import rules_from_seed, write_master_list, write_rules_workbook
from connectors.warehouse import journal
from connectors.warehouse.dbt import WAREHOUSE_ENV
from connectors.warehouse.lock import WarehouseLock
from connectors.warehouse.store import Warehouse
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

SEED = Path("seeds") / "study_description_rules.csv"
WAIT_SECONDS = 240.0  # the subprocess imports dbt and builds the manifest first


@pytest.fixture
def proxy(orthanc: Any) -> Iterator[FaultProxy]:
    p = FaultProxy(orthanc.host, orthanc.port)
    p.aet = orthanc.aet
    yield p
    p.close()


def _patient_settings(project: Path, proxy: FaultProxy, standin: StandinHandle) -> Settings:
    """One association (studies one after another), the manifest read again at once, and PACS
    timeouts longer than the test holds the PACS's answers."""
    s = fault_settings(project, proxy, standin, manifest_refresh_seconds=0.0)
    pacs = dataclasses.replace(
        s.pacs, max_associations=1, acse_timeout=300.0, dimse_timeout=300.0, network_timeout=300.0
    )
    return dataclasses.replace(s, pacs=pacs)


def _start_load(settings: Settings, project: Path) -> subprocess.Popen[bytes]:
    config = write_config(settings, project / "pacs2xnat.toml")
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    env.pop(WAREHOUSE_ENV, None)
    return subprocess.Popen(
        [sys.executable, "-m", "connectors.app.cli", "--config", str(config), "--json", "load"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=open(project / "load.err", "wb"),
    )


def _wait_for(proc: subprocess.Popen[bytes], moment: Any, project: Path) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not moment():
        if proc.poll() is not None:
            err = (project / "load.err").read_text(errors="replace")[-3000:]
            pytest.fail(f"load ended (exit {proc.returncode}) before the moment came:\n{err}")
        assert time.monotonic() < deadline, "the moment never came"
        time.sleep(0.05)


def _plain_dbt_build(project: Path) -> subprocess.CompletedProcess[str]:
    """``dbt build`` as the analyst types it in the project root (profiles.yml's default path)."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    env.pop(WAREHOUSE_ENV, None)
    dbt = Path(sys.executable).parent / "dbt"
    return subprocess.run(
        [str(dbt), "build"], cwd=project, env=env, capture_output=True, text=True, timeout=600
    )


def test_the_admin_works_while_a_load_runs(
    template: Template, proxy: FaultProxy, standin_xnat: StandinHandle, tmp_path: Path
) -> None:
    project = workspace_from(template, tmp_path)
    settings = _patient_settings(project, proxy, standin_xnat)
    config = write_config(settings, project / "pacs2xnat.toml")
    wh = Warehouse(settings.warehouse_path)
    manifest = wh.read_relation("main.ingest_manifest", "order by study_date, session_label")
    by_uid = {s.study_instance_uid: s for s in template.studies}
    ordered = [by_uid[str(r["study_instance_uid"])] for r in manifest]
    in_hand, excluded = ordered[0], ordered[-1].description
    dropped = [s for s in ordered[1:] if s.description == excluded]
    kept = [s for s in ordered if s not in dropped]

    proxy.paused.set()  # the PACS answers nothing until the admin is done
    proc = _start_load(settings, project)
    try:
        _wait_for(proc, lambda: proxy.connections > 0, project)  # the first study is in hand
        include, exclude = rules_from_seed(project / SEED)
        book = write_rules_workbook(
            tmp_path / "rules.xlsx",
            [(d, n) for d, n in include if d.lower() != excluded.lower()],
            [*exclude, (excluded, "excluded during the load")],
        )
        master = write_master_list(template.cohort, tmp_path / "master.xlsx")
        cli = CliRunner()
        for args in (
            ["rules", "import", str(book)],
            ["patients", "import", str(master)],
            ["build"],
            ["report", "--out", str(tmp_path / "reports")],
            ["failures"],
            ["export", str(tmp_path / "ingest.csv")],
        ):
            res = cli.invoke(app, ["--config", str(config), "--quiet", *args])
            assert res.exit_code == 0, (args, res.output)
        plain = _plain_dbt_build(project)
        assert plain.returncode == 0, plain.stdout[-3000:] + plain.stderr[-3000:]
        assert proc.poll() is None, "the load ended before the admin was done"
    finally:
        proxy.paused.clear()
    out, _ = proc.communicate(timeout=WAIT_SECONDS)
    err = (project / "load.err").read_text(errors="replace")[-3000:]
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["loaded"] == len(kept), summary
    assert summary["left_manifest"] == len(dropped), summary

    mine = [a for a in attempts(settings) if a["run_id"] == summary["run_id"]]
    detail = [(a["study_instance_uid"][-6:], a["outcome"], a["message"]) for a in mine]
    # every study kept has its one loaded row (a transient failure retried has its own row)
    assert {a["study_instance_uid"] for a in mine} == {s.study_instance_uid for s in kept}, detail
    loaded = [a["study_instance_uid"] for a in mine if a["outcome"] == "loaded"]
    assert sorted(loaded) == sorted(s.study_instance_uid for s in kept), detail
    assert in_hand.study_instance_uid in loaded
    assert not journal.pending(settings.warehouse_path)
    seen = assert_nothing_lost(settings, standin_xnat, kept, runs=[summary])
    assert all(seen["in_xnat"][s.study_instance_uid] == 1 for s in kept)
    assert all(sessions_by_uid(standin_xnat)[s.study_instance_uid] == 0 for s in dropped)


def test_sigkill_with_rows_in_the_journal_then_the_rerun_writes_them_first(
    template: Template, proxy: FaultProxy, standin_xnat: StandinHandle, tmp_path: Path
) -> None:
    project = workspace_from(template, tmp_path)
    settings = fault_settings(project, proxy, standin_xnat)
    db = settings.warehouse_path
    proxy.delay = 0.05  # slow enough that the lock is taken while the load is under way
    proc = _start_load(settings, project)
    other = WarehouseLock(db)  # another command holding the warehouse (a long build)
    try:
        _wait_for(proc, lambda: any(settings.work_dir.rglob("*.dcm")), project)
        other.acquire("build", wait=60)
        _wait_for(proc, lambda: journal.pending(db), project)  # an attempt row journaled
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        other.release()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    proxy.delay = 0.0
    entries = [json.loads(line) for line in journal.journal_path(db).read_text().splitlines()]
    journaled = {r["attempt_id"] for e in entries for r in e["tables"]["ingest_attempts"]}
    assert journaled
    assert not journaled & {a["attempt_id"] for a in attempts(settings)}

    code, run, error = invoke(settings, "load", lambda rc: run_load(rc, build_manifest=False))
    assert code == 0, error
    rows = attempts(settings)
    assert sum(a["attempt_id"] in journaled for a in rows) == len(journaled)  # each once
    assert not journal.pending(db)
    con = duckdb.connect(str(db), read_only=True)
    try:
        replayed = con.execute("select max(loaded_at) from raw.journal_entries").fetchone()
        rerun = con.execute(
            "select started_at from raw.runs where run_id = ?", [run["run_id"]]
        ).fetchone()
    finally:
        con.close()
    assert replayed is not None
    assert rerun is not None
    assert replayed[0] <= rerun[0]  # the journal's rows were written before anything else
    assert_nothing_lost(settings, standin_xnat, template.studies, runs=[run])
