"""Two ``pacs2xnat load`` processes (real subprocesses, as on two machines) on one real
PostgreSQL warehouse against one Orthanc, behind a proxy that slows the PACS down and counts
the associations open at once: they share one manifest, every study is retrieved and loaded
exactly once, and the team never has more than ``max_associations`` open at the PACS. One of
them is SIGKILLed in the middle of a retrieve: its claims expire with its PostgreSQL session and
the other finishes its studies, the one it had in hand included."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from connectors import PROJECT_ROOT
from connectors.config import WarehouseConfig
from connectors.testbed.cohort import Cohort
from connectors.warehouse.dbt import copy_project
from connectors.warehouse.postgres import PostgresWarehouse
from tests.support.cohort_warehouse import includable_studies, seed_decisions
from tests.support.fault_helpers import fault_settings, raw_rows, sessions_by_uid, write_config
from tests.support.fault_proxy import FaultProxy
from tests.support.xnat_fixtures import StandinHandle

IMPORT = "/data/services/import"
DONE = ("loaded", "already_present")

pytestmark = [pytest.mark.orthanc, pytest.mark.slow]

STUDIES = 30
TEAM_ASSOCIATIONS = 2
WAIT_SECONDS = 300.0


def _loader(
    name: str, root: Path, proxy: FaultProxy, standin: StandinHandle, url: str
) -> subprocess.Popen[bytes]:
    project = copy_project(root / name)  # its own dbt target/ and work folder: its own machine
    settings = fault_settings(project, proxy, standin, work_dir=str(project / "work"), retries=0)
    settings = dataclasses.replace(
        settings,
        warehouse=WarehouseConfig(path=str(project / "warehouse" / "local.duckdb"), url=url),
        pacs=dataclasses.replace(settings.pacs, max_associations=TEAM_ASSOCIATIONS),
    )
    config = write_config(settings, project / "pacs2xnat.toml")
    log = open(project / "load.out", "wb")  # noqa: SIM115 - handed to the child process
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "connectors.app.cli", "--config", str(config), "load"],
            cwd=project,
            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    finally:
        log.close()


def _wait(proc: subprocess.Popen[bytes], out: Path) -> None:
    try:
        proc.wait(timeout=WAIT_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("a loader never finished:\n" + out.read_text(errors="replace")[-3000:])
    assert proc.returncode == 0, out.read_text(errors="replace")[-3000:]


def _in_hand(work: Path) -> list[str]:
    """The studies whose files are arriving in a loader's work folder."""
    try:
        return [s.name for s in work.glob("*/*") if any(s.glob("*.dcm"))]
    except FileNotFoundError:  # a study's folder went away during the scan
        return []


def test_two_loaders_load_each_study_once_and_finish_a_killed_ones_studies(
    tmp_path: Path, orthanc: Any, pacs_cohort: Cohort, standin_xnat: StandinHandle, pg_url: str
) -> None:
    studies = includable_studies(pacs_cohort, seed_decisions())[:STUDIES]
    warehouse = PostgresWarehouse(pg_url)
    warehouse.ensure()
    day = dt.datetime(2026, 11, 2, 9)
    for table, rows in raw_rows(pacs_cohort, studies, "query-1", day).items():
        warehouse.append(table, rows)
    proxy = FaultProxy(orthanc.host, orthanc.port)
    proxy.aet = orthanc.aet
    proxy.delay = 0.25  # a latency-bound PACS: the first loader is still busy when B starts
    imports = standin_xnat.server.app.in_flight
    held: str | None = None
    try:
        first = _loader("a", tmp_path, proxy, standin_xnat, pg_url)
        deadline = time.monotonic() + WAIT_SECONDS
        while not warehouse.read_relation("raw.ingest_attempts", "limit 1"):
            assert first.poll() is None, (tmp_path / "a" / "load.out").read_text()[-3000:]
            assert time.monotonic() < deadline, "the first loader never loaded a study"
            time.sleep(0.2)
        second = _loader("b", tmp_path, proxy, standin_xnat, pg_url)
        # A is killed once B is loading too, while A retrieves a study (no upload in flight)
        deadline = time.monotonic() + WAIT_SECONDS
        while held is None:
            assert first.poll() is None, (tmp_path / "a" / "load.out").read_text()[-3000:]
            assert second.poll() is None, (tmp_path / "b" / "load.out").read_text()[-3000:]
            assert time.monotonic() < deadline, "the moment to kill A never came"
            time.sleep(0.2)
            if imports.get(IMPORT, 0) or not any((tmp_path / "b" / "work").glob("*/*")):
                continue
            retrieving = _in_hand(tmp_path / "a" / "work")
            if retrieving:  # the warehouse asked only then (a connection each time)
                rows = warehouse.read_relation("raw.ingest_attempts")
                done = {r["study_instance_uid"] for r in rows}
                held = next((uid for uid in retrieving if uid not in done), None)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        proxy.delay = 0.0  # the rest at the PACS's own pace
        _wait(second, tmp_path / "b" / "load.out")
    finally:
        if first.poll() is None:
            first.kill()
        proxy.close()

    assert first.returncode == -signal.SIGKILL
    uids = {s.study_instance_uid for s in studies}
    in_xnat = sessions_by_uid(standin_xnat)
    assert set(in_xnat) == uids
    assert set(in_xnat.values()) == {1}  # each study in XNAT exactly once
    rows = warehouse.read_relation("raw.ingest_attempts", "order by finished_at")
    killed_run = rows[0]["run_id"]  # A loaded the first study
    by_run = Counter(r["run_id"] for r in rows)
    assert len(by_run) == 2, by_run  # both loaders did part of the work
    finished = Counter(r["study_instance_uid"] for r in rows if r["outcome"] in DONE)
    assert finished == Counter(dict.fromkeys(uids, 1))  # retrieved and uploaded once each
    assert [r for r in rows if r["outcome"] not in DONE] == []
    # the studies A had in hand when it died (their folders stay: no row of A's) were all
    # finished by B; XNAT may already hold one A was uploading (B finds it already present),
    # any other study already present would be one two loaders both retrieved
    in_hand = set(_in_hand(tmp_path / "a" / "work")) - {
        r["study_instance_uid"] for r in rows if r["run_id"] == killed_run
    }
    assert held in in_hand
    assert all(r["run_id"] != killed_run for r in rows if r["study_instance_uid"] in in_hand)
    present = {r["study_instance_uid"] for r in rows if r["outcome"] == "already_present"}
    assert present <= in_hand, present
    assert proxy.most_open <= TEAM_ASSOCIATIONS  # counted at the PACS, for the whole team
    assert proxy.connections >= STUDIES  # one association per study (none kept idle)
