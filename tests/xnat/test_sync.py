"""``pacs2xnat sync``: the project's sessions as one snapshot in raw.xnat_sessions."""

from __future__ import annotations

import dataclasses
import logging
import random
from pathlib import Path
from typing import Any

import duckdb
import pytest
import requests
from typer.testing import CliRunner

from connectors.app.cli import app
from connectors.config import WarehouseConfig
from connectors.warehouse.runs import RunContext
from connectors.xnat.client import XnatClient
from connectors.xnat.sync import sync_sessions
from connectors.xnat.zipstream import zip_stream
from tests.support.xnat_fixtures import StandinHandle, dicom_study, xnat_settings


def _archive(h: StandinHandle, tmp_path: Path, label: str, subject: str, n: int, series: int):
    uid, files = dicom_study(tmp_path / label, n, series=series, accession=label)
    requests.post(
        f"{h.url}/data/services/import",
        params={"dest": "/archive", "project": "HNC", "subject": subject, "session": label},
        data=b"".join(zip_stream(files)),
        headers={"Content-Type": "application/zip"},
        auth=(h.user, h.password),
        timeout=10,
    ).raise_for_status()
    return uid


def _config(h: StandinHandle, ws: Path) -> Path:
    cfg = ws / "pacs2xnat.toml"
    cfg.write_text(
        f'[xnat]\nurl = "{h.url}"\nproject = "HNC"\ntimeout = 10.0\n'
        '[warehouse]\npath = "warehouse/pacs2xnat.duckdb"\n'
    )
    return cfg


def test_sync_writes_one_snapshot_with_scan_counts(
    standin_xnat: StandinHandle, tmp_path: Path
) -> None:
    """It writes every session (subject, label, modality, date, UID, scans) paged, and the
    next sync reads scan counts only for sessions it has not seen."""
    uids = {
        f"RA{i}": _archive(standin_xnat, tmp_path, f"RA{i}", f"S{i % 2}", i + 2, i + 1)
        for i in range(3)
    }
    base = xnat_settings(standin_xnat)
    settings = dataclasses.replace(
        base, warehouse=WarehouseConfig(path=str(tmp_path / "wh" / "w.duckdb"))
    )
    rc = RunContext(settings=settings, command="sync", arguments=[])
    with XnatClient(settings) as client:
        first = sync_sessions(rc, client, page_size=2)
    assert first["sessions"] == 3
    assert first["subjects"] == 2
    assert first["scan_counts_read"] == 3
    _archive(standin_xnat, tmp_path, "RA9", "S9", 1, 1)
    rc2 = RunContext(settings=settings, command="sync", arguments=[])
    with XnatClient(settings) as client:
        second = sync_sessions(rc2, client, page_size=2)
    assert (second["sessions"], second["scan_counts_read"]) == (4, 1)
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    rows = con.execute(
        "select session_label, subject_label, modality, session_date, study_instance_uid, "
        "scan_count, xsi_type from raw.xnat_sessions where run_id = ? order by 1",
        [rc.run_id],
    ).fetchall()
    con.close()
    assert [r[0] for r in rows] == ["RA0", "RA1", "RA2"]
    assert [r[5] for r in rows] == [1, 2, 3]
    assert {r[4] for r in rows} == set(uids.values())
    assert rows[0][1:4] == ("S0", "CT", "2021-03-04")
    assert rows[0][6] == "xnat:ctSessionData"


def test_sync_cli_exit_codes(
    standin_xnat: StandinHandle, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It exits 0 with the session count, and 3 with a clear message when XNAT is down."""
    _archive(standin_xnat, workspace, "RA1", "S1", 1, 1)
    cfg = _config(standin_xnat, workspace)
    runner = CliRunner()
    ok = runner.invoke(app, ["--config", str(cfg), "--json", "sync"])
    assert ok.exit_code == 0, ok.output
    assert '"sessions": 1' in ok.stdout
    standin_xnat.server.stop()
    down = runner.invoke(app, ["--config", str(cfg), "sync"])
    assert down.exit_code == 3
    assert "does not answer" in down.stderr


def _seed_sessions(h: StandinHandle, n: int) -> None:
    """``n`` archived sessions of one scan each, put straight into the stand-in's store."""
    from connectors.testbed.xnat_standin.store import Scan, Session

    with h.store.lock:
        for i in range(n):
            s = Session("", "HNC", "", f"RA{i:05d}", f"1.2.826.0.1.9.{i}", "CT", "2021-03-04")
            s.scans["1.2.9." + str(i)] = Scan("1", f"1.2.9.{i}", "CT", files={f"sop{i}": 10})
            h.store.archive(s, f"S{i % 50}", merge=False)


@pytest.mark.slow  # over 5 s (pytest --durations): not in the fast set
@pytest.mark.parametrize(
    ("version", "ignore_paging", "n"),
    [("1.8.5", False, 2500), ("1.8.10", True, 1500), ("1.8.10", False, 1500)],
    ids=["paging-less-1.8.5", "says-1.8.10-ignores-paging", "paged-1.8.10"],
)
def test_sync_finishes_with_exactly_every_session_with_or_without_paging(
    standin_xnat_factory: Any, tmp_path: Path, version: str, ignore_paging: bool, n: int
) -> None:
    """It writes exactly 2,500 (1,500) sessions from an XNAT whose listings ignore limit/offset
    (before 1.8.9, told by /xapi/siteConfig/buildInfo; or whatever the version says: a page
    longer than asked or a repeated page gives it away) and from one that pages."""
    h = standin_xnat_factory(version=version)
    h.faults.ignore_paging = ignore_paging
    _seed_sessions(h, n)
    settings = dataclasses.replace(
        xnat_settings(h), warehouse=WarehouseConfig(path=str(tmp_path / "wh" / "w.duckdb"))
    )
    rc = RunContext(settings=settings, command="sync", arguments=[])
    with XnatClient(settings) as client:
        assert client.version == version
        done = sync_sessions(rc, client, page_size=1000)
    assert (done["sessions"], done["subjects"]) == (n, 50)
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    rows, distinct = con.execute(
        "select count(*), count(distinct session_id) from raw.xnat_sessions where run_id = ?",
        [rc.run_id],
    ).fetchone()
    con.close()
    assert (rows, distinct) == (n, n)
    listings = [r for r in h.server.app.request_log if r[1] == "/data/projects/HNC/experiments"]
    assert len(listings) <= 4


def test_sync_misses_no_session_when_xnat_pages_in_no_stable_order(
    standin_xnat_factory: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Whether real XNAT's listing SQL orders rows before its LIMIT the sources leave open
    (``listing._select``); when each page is cut from rows in another order, one page repeats
    a session of an earlier one and another is never seen: the sync notices the repeat, reads
    the list unpaged, and writes every session exactly once."""
    h = standin_xnat_factory(version="1.8.10")
    h.store.page_order = random.Random(7)
    _seed_sessions(h, 120)
    settings = dataclasses.replace(
        xnat_settings(h), warehouse=WarehouseConfig(path=str(tmp_path / "wh" / "w.duckdb"))
    )
    rc = RunContext(settings=settings, command="sync", arguments=[])
    with XnatClient(settings) as client, caplog.at_level(logging.INFO):
        done = sync_sessions(rc, client, page_size=50)
    assert done["sessions"] == 120
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    ids = {
        r[0]
        for r in con.execute(
            "select session_id from raw.xnat_sessions where run_id = ?", [rc.run_id]
        ).fetchall()
    }
    con.close()
    assert ids == set(h.store.sessions)
    assert any("pages overlap" in r.getMessage() for r in caplog.records)
