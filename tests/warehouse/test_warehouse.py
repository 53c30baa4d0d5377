"""It keeps one writer at a time, for one short transaction, makes the others wait (bounded,
saying who holds it), and creates the warehouse owner-only."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import multiprocessing as mp
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from connectors import clock
from connectors.app.cli import app
from connectors.clock import TODAY_ENV, utcnow
from connectors.config import settings_from_dict
from connectors.errors import WarehouseBusy
from connectors.testbed.cohort import make_cohort
from connectors.testbed.workbooks import write_master_list
from connectors.warehouse import builds, lock
from connectors.warehouse.lock import WarehouseLock
from connectors.warehouse.runs import RunContext
from connectors.warehouse.schema import RAW_TABLES
from connectors.warehouse.store import Warehouse
from tests.support.raw_rows import run_row


@pytest.fixture(autouse=True)
def _short_wait() -> Iterator[None]:
    lock.set_wait(0.5)
    yield
    lock.set_wait(None)


def _hold_lock(path: str, ready, release, seconds: float = 30) -> None:  # type: ignore[no-untyped-def]
    held = WarehouseLock(Path(path))
    held.acquire("load")
    ready.set()
    release.wait(seconds)
    held.release()


@contextlib.contextmanager
def _held_by(target: Callable[..., None], db: Path, *extra: Any) -> Iterator[None]:
    """Another process (``target(db, ready, release, *extra)``) holds the warehouse while the
    block runs; it lets go and exits afterwards."""
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=target, args=(str(db), ready, release, *extra))
    proc.start()
    try:
        assert ready.wait(30)
        yield
    finally:
        release.set()
        proc.join(30)


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
    with (
        _held_by(_hold_lock, db),
        pytest.raises(WarehouseBusy, match=r"warehouse busy: pacs2xnat load \(pid \d+"),
    ):
        WarehouseLock(db).acquire("query")
    WarehouseLock(db).acquire("query")  # free again once the holder is gone


def test_a_taken_warehouse_is_waited_for_and_the_wait_names_the_holder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A command finding the warehouse in use waits, saying who holds it and for how long it
    will wait, and goes on as soon as the holder lets go."""
    db = tmp_path / "p.duckdb"
    Warehouse(db).ensure()
    with _held_by(_hold_lock, db, 1.0):
        lock.set_wait(30)
        started = time.monotonic()
        with caplog.at_level(logging.INFO, "connectors.warehouse.lock"):
            Warehouse(db).append("runs", [run_row("r1")])
        waited = time.monotonic() - started
    assert waited < 30  # it did not wait out its limit: it went on when the holder let go
    assert re.search(
        r"warehouse in use by pacs2xnat load \(pid \d+, since .+\); waiting up to 30 s",
        caplog.text,
    ), caplog.text
    with Warehouse(db).connect(read_only=True) as con:
        assert con.execute("select count(*) from raw.runs").fetchone() == (1,)


def test_the_wait_is_bounded_then_warehouse_busy(tmp_path: Path) -> None:
    db = tmp_path / "p.duckdb"
    with (
        _held_by(_hold_lock, db),
        pytest.raises(WarehouseBusy, match=r"pacs2xnat load \(pid .* within 0 s"),
    ):
        Warehouse(db).append("runs", [run_row("r1")])


def test_the_lock_is_held_only_for_a_transaction(tmp_path: Path) -> None:
    """Between two transactions of one process another process can take the lock and open
    the DuckDB file (DuckDB refuses a second process while one has it open)."""
    db = tmp_path / "p.duckdb"
    wh = Warehouse(db)
    wh.append("runs", [run_row("r1")])
    other = WarehouseLock(db)
    assert other.try_acquire("report")
    other.release()
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=_append_run, args=(str(db), "r2"))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    wh.append("runs", [run_row("r3")])
    with wh.connect(read_only=True) as con:
        assert con.execute("select count(*) from raw.runs").fetchone() == (3,)


def _append_run(path: str, run_id: str) -> None:
    Warehouse(Path(path)).append("runs", [run_row(run_id)])


def test_duckdb_lock_from_another_process_is_warehouse_busy(tmp_path: Path) -> None:
    db = tmp_path / "p.duckdb"
    Warehouse(db).ensure()
    with (
        _held_by(_hold_duckdb, db),
        pytest.raises(WarehouseBusy, match="warehouse busy"),
        Warehouse(db).connect(),
    ):
        pass


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


def test_append_keeps_every_value_as_given(tmp_path: Path) -> None:
    """Rows go in as one list per column (``store._insert_statement``): each value reads back
    as it went in, in its row: nulls (a column null in every row too), dates, timestamps to
    the microsecond, the largest integers, backslashes, non-ASCII names."""
    wh = Warehouse(tmp_path / "p.duckdb")
    t0 = dt.datetime(2026, 12, 7, 9, 30, 15, 123456)
    rows = [
        {"run_id": "r", "loaded_at": t0, "query_id": f"q{i}", "mrn": f"M{i}",
         "window_from": dt.date(2020, 1, i + 1) if i % 2 else None, "window_to": None,
         "started_at": t0 + dt.timedelta(days=i), "finished_at": t0, "outcome": "success",
         "studies_found": i, "sub_queries": 2**31 - 1 - i,
         "status_code": None if i else "0xFF00", "message": ("Ünïcødé\\ " * i) or None}
        for i in range(3)
    ]  # fmt: skip
    assert wh.append("pacs_queries", rows) == 3
    got = wh.read_relation("raw.pacs_queries", "order by query_id")
    assert [{k: g[k] for k in rows[0]} for g in got] == rows
    assert wh.append("pacs_queries", []) == 0


def _plain_dbt_hold(path: str, ready, release) -> None:  # type: ignore[no-untyped-def]
    """What the dbt-duckdb plugin does in a plain `dbt build` process."""
    lock.hold_until_exit(Path(path), "dbt build")
    ready.set()
    release.wait(30)


def test_plain_dbt_build_holds_the_lock_until_it_exits(tmp_path: Path) -> None:
    db = tmp_path / "p.duckdb"
    with (
        _held_by(_plain_dbt_hold, db),
        pytest.raises(WarehouseBusy, match=r"warehouse busy: dbt build \(pid \d+"),
    ):
        Warehouse(db).append("runs", [run_row("r1")])
    Warehouse(db).append("runs", [run_row("r1")])  # free once dbt has exited


@pytest.mark.parametrize(
    "argv",
    [
        ["--wait", "1", "failures"],
        ["failures", "--wait", "1"],  # the command's own --wait
        ["--wait", "600", "failures", "--wait", "1"],  # ... wins over the global one
        ["patients", "import", "{master}", "--wait", "1"],  # a sub-command's too
    ],
    ids=["global", "per-command", "per-command-wins", "sub-command"],
)
def test_a_command_exits_3_naming_the_holder_when_its_wait_runs_out(
    workspace: Path, cli: CliRunner, argv: list[str]
) -> None:
    db = workspace / "warehouse" / "pacs2xnat.duckdb"
    master = write_master_list(make_cohort(2, seed=3), workspace / "master.xlsx")
    with _held_by(_hold_lock, db):
        res = cli.invoke(app, [a.format(master=master) for a in argv])
    assert res.exit_code == 3, res.output
    assert re.search(r"warehouse in use by pacs2xnat load \(pid \d+.*waiting up to 1 s", res.stderr)
    assert re.search(r"warehouse busy: pacs2xnat load \(pid \d+.*within 1 s", res.stderr)


def test_today_is_a_dbt_var_only_when_pinned_or_the_warehouse_disagrees(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unpinned, the SQL reads the warehouse's ``current_date`` (so the plan's views outlive
    the day they were built on); today is passed to dbt when PACS2XNAT_TODAY pins it, or when
    the warehouse's date is not this machine's (checked on the real DuckDB: the clock moved a
    day ahead of it), and then the build's fingerprints change with it."""
    monkeypatch.delenv(TODAY_ENV, raising=False)
    settings = settings_from_dict({"warehouse": {"path": str(tmp_path / "wh.duckdb")}})
    rc = RunContext(settings=settings, command="build", arguments=[])
    overlap = settings.cycle.overlap_days

    vars_, same_day = builds._inputs(rc)
    assert vars_ == {"overlap_days": overlap}

    tomorrow = dt.date.today() + dt.timedelta(days=1)
    monkeypatch.setattr(clock, "today", lambda: tomorrow)
    vars_, ahead = builds._inputs(rc)
    assert vars_ == {"overlap_days": overlap, "today": tomorrow.isoformat()}
    assert ahead.project != same_day.project
    assert ahead.everything != same_day.everything

    monkeypatch.undo()
    monkeypatch.setenv(TODAY_ENV, "2026-11-25")
    assert builds.dbt_vars(rc, dt.date.today()) == {"overlap_days": overlap, "today": "2026-11-25"}
