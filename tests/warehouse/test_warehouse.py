"""It keeps one writer at a time and creates the warehouse owner-only."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

from connectors.clock import utcnow
from connectors.errors import WarehouseBusy
from connectors.warehouse.lock import WarehouseLock
from connectors.warehouse.schema import RAW_TABLES
from connectors.warehouse.store import Warehouse


def _hold_lock(path: str, ready, release) -> None:  # type: ignore[no-untyped-def]
    lock = WarehouseLock(Path(path))
    lock.acquire("load")
    ready.set()
    release.wait(30)
    lock.release()


def test_fresh_warehouse_has_every_raw_table_and_is_owner_only(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path / "w" / "p.duckdb")
    wh.ensure()
    assert oct(wh.path.stat().st_mode & 0o777) == "0o600"
    assert oct(wh.path.parent.stat().st_mode & 0o777) == "0o700"
    with wh.connect(read_only=True) as con:
        tables = {
            r[0]
            for r in con.execute(
                "select table_name from information_schema.tables where table_schema = 'raw'"
            ).fetchall()
        }
    assert tables == set(RAW_TABLES)


def test_second_writer_gets_warehouse_busy_naming_the_holder(tmp_path: Path) -> None:
    db = tmp_path / "p.duckdb"
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_lock, args=(str(db), ready, release))
    proc.start()
    try:
        assert ready.wait(30)
        with pytest.raises(WarehouseBusy, match=r"warehouse busy: pacs2xnat load \(pid \d+"):
            WarehouseLock(db).acquire("query")
    finally:
        release.set()
        proc.join(30)
    WarehouseLock(db).acquire("query")  # free again once the holder is gone


def test_duckdb_lock_from_another_process_is_warehouse_busy(tmp_path: Path) -> None:
    db = tmp_path / "p.duckdb"
    Warehouse(db).ensure()
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_duckdb, args=(str(db), ready, release))
    proc.start()
    try:
        assert ready.wait(30)
        with pytest.raises(WarehouseBusy, match="warehouse busy"), Warehouse(db).connect():
            pass
    finally:
        release.set()
        proc.join(30)


def _hold_duckdb(path: str, ready, release) -> None:  # type: ignore[no-untyped-def]
    import duckdb

    con = duckdb.connect(path)
    ready.set()
    release.wait(30)
    con.close()


def test_append_is_all_or_nothing(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path / "p.duckdb")
    now = utcnow()
    good = {
        "run_id": "r",
        "loaded_at": now,
        "query_id": "q1",
        "mrn": "M1",
        "started_at": now,
        "finished_at": now,
        "outcome": "success",
        "studies_found": 0,
        "sub_queries": 1,
    }
    bad = {**good, "query_id": "q2", "mrn": None}  # violates not null
    with pytest.raises(Exception, match="NOT NULL"):
        wh.append("pacs_queries", [good, bad])
    with wh.connect(read_only=True) as con:
        assert con.execute("select count(*) from raw.pacs_queries").fetchone() == (0,)
