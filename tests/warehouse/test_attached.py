"""The warehouse's transactions attach the file to one in-memory DuckDB instance per process
(``warehouse/attached.py``): they must let go of the file as closing a connection did, roll
back what was not committed, share the file when nested, read SQL as a plain connection does,
and fall back to ``duckdb.connect`` when another instance of this process has the file open.
Against real DuckDB; these break if a DuckDB upgrade changes what the seam relies on."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pytest

from connectors.warehouse import attached
from connectors.warehouse.store import Warehouse
from tests.support.raw_rows import run_row


def _count_in_another_process(db: Path) -> int:
    """``raw.runs``' rows as a plain ``duckdb.connect`` in another process reads them: it can
    open the file only if this process has let go of DuckDB's lock."""
    code = (
        "import duckdb, sys; con = duckdb.connect(sys.argv[1]); "
        "print(con.execute('select count(*) from raw.runs').fetchone()[0])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(db)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


def test_a_transaction_lets_go_of_the_file_and_its_wal_when_it_ends(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    wh = Warehouse(db)
    wh.append("runs", [run_row("r1"), run_row("r2")])
    assert not Path(f"{db}.wal").exists()  # checkpointed by the detach, as the last close did
    assert _count_in_another_process(db) == 2
    wh.append("runs", [run_row("r3")])  # and this process attaches it again after that one
    assert _count_in_another_process(db) == 3


def test_what_was_not_committed_is_rolled_back(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path / "w.duckdb")
    with wh.connect() as con:
        con.execute("create table main.t (a integer)")

    def half_way() -> None:
        with wh.connect() as con:
            con.execute("begin transaction")
            con.execute("insert into main.t values (1)")
            raise RuntimeError("stopped half way")

    with pytest.raises(RuntimeError):
        half_way()
    with wh.connect(read_only=True) as con:
        assert con.execute("select count(*) from main.t").fetchone() == (0,)


def test_sql_reads_as_on_a_plain_connection(tmp_path: Path) -> None:
    db = tmp_path / "lake.duckdb"
    wh = Warehouse(db)
    with wh.connect() as con:
        con.execute("create table main.answer as select 42 as a")
        assert con.execute("select current_database(), current_schema()").fetchone() == (
            "lake",
            "main",
        )
        assert con.execute("select a from answer").fetchone() == (42,)
        assert con.execute("select a from main.answer").fetchone() == (42,)
        assert con.execute("select count(*) from raw.runs").fetchone() == (0,)
    plain = duckdb.connect(str(db))
    try:
        assert plain.execute("select current_database()").fetchone() == ("lake",)
    finally:
        plain.close()


def test_a_nested_open_shares_the_file_and_the_outermost_lets_go(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    wh = Warehouse(db)
    with wh.connect() as outer:
        wh.append("runs", [run_row("outer")], con=outer)
        with wh.connect(read_only=True) as inner:
            assert inner.execute("select count(*) from raw.runs").fetchone() == (1,)
        wh.append("runs", [run_row("after")], con=outer)
        with pytest.raises(duckdb.Error, match="Unique file handle conflict"):  # still held
            duckdb.connect(str(db)).close()
    assert _count_in_another_process(db) == 2


def test_a_write_inside_a_read_only_open_is_refused(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path / "w.duckdb")
    wh.ensure()
    with (
        wh.connect(read_only=True),
        pytest.raises(duckdb.ConnectionException, match="read-only"),
        wh.connect(),
    ):
        pass


def test_a_file_another_instance_of_this_process_holds_is_opened_through_it(
    tmp_path: Path,
) -> None:
    db = tmp_path / "w.duckdb"
    Warehouse(db).ensure()
    mine = duckdb.connect(str(db))
    try:
        with pytest.raises(duckdb.Error) as refused:  # what the seam recognises
            attached._memory().execute(f"attach '{db}' as probe")
        assert attached.in_use_elsewhere(refused.value)
        Warehouse(db).append("runs", [run_row("r1")])
        assert mine.execute("select count(*) from raw.runs").fetchone() == (1,)
    finally:
        mine.close()
    assert _count_in_another_process(db) == 1


def test_two_threads_on_two_warehouses_at_once(tmp_path: Path) -> None:
    houses = [Warehouse(tmp_path / f"w{i}.duckdb") for i in range(2)]
    errors: list[BaseException] = []

    def work(wh: Warehouse) -> None:
        try:
            for n in range(40):
                wh.append("runs", [run_row(f"r{n}")])
        except BaseException as e:  # reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(wh,)) for wh in houses]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    for wh in houses:
        assert _count_in_another_process(wh.path) == 40


def test_two_files_of_the_same_name_are_attached_under_two_names(tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "w.duckdb", tmp_path / "b" / "w.duckdb"
    with Warehouse(first).connect() as a, Warehouse(second).connect() as b:
        Warehouse(first).append("runs", [run_row("a")], con=a)
        assert b.execute("select count(*) from raw.runs").fetchone() == (0,)
        assert a.execute("select current_database()").fetchone() == ("w",)
        assert b.execute("select current_database()").fetchone() == ("w_1",)
    assert _count_in_another_process(first) == 1
    assert _count_in_another_process(second) == 0
