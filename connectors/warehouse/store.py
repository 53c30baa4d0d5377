"""The DuckDB warehouse: open it briefly, append raw rows, read marts.

The file is created owner-only (0600) and the raw DDL (``schema.py``) is applied on every
connection. DuckDB lets no other process open a file a writer has open, so every connection is
one short transaction under the writer lock (``lock.py``): a command waits (bounded) for
another's transaction instead of failing on DuckDB's lock error.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb

from connectors import console
from connectors.errors import StepFailed, WarehouseBusy
from connectors.warehouse.attached import open_file
from connectors.warehouse.lock import holding, wait_seconds
from connectors.warehouse.schema import RAW_TABLES, apply_ddl


def _is_lock_error(e: Exception) -> bool:
    text = str(e)
    return "lock" in text.lower() and ("Conflicting" in text or "Could not set lock" in text)


class Warehouse:
    """The DuckDB file. Open it briefly with ``connect()``; never across a ``dbt build``."""

    #: one writer at a time (``lock.py``); the PostgreSQL warehouse (``postgres.py``) is shared
    exclusive = True

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @property
    def label(self) -> str:
        """Where the warehouse is, for messages: the file, or the URL (never a password)."""
        return str(self.path)

    def ensure(self) -> None:
        """Create the folder (0700), the file (0600) and the raw schema if they are missing."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self.connect():
            pass

    @contextlib.contextmanager
    def connect(
        self, read_only: bool = False, wait: float | None = None
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for one short transaction, with the raw DDL applied, under the writer
        lock (``lock.holding``: other processes wait, bounded, and can open the file again
        as soon as this closes). Never hold one across a wait for PACS or XNAT. ``wait``:
        seconds to wait for another's transaction (default ``lock.wait_seconds()``)."""
        with holding(self.path, wait), self._open(read_only, wait) as con:
            yield con

    @contextlib.contextmanager
    def _open(self, read_only: bool, wait: float | None) -> Iterator[duckdb.DuckDBPyConnection]:
        if read_only and not self.path.exists():
            self.ensure()
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        con, close = _connect_waiting(
            self.path, read_only, wait_seconds() if wait is None else wait
        )
        try:
            if not read_only:
                os.chmod(self.path, 0o600)
                _apply_ddl_once(con, self.path)
            yield con
        finally:
            close()

    def append(
        self,
        table: str,
        rows: Iterable[Mapping[str, Any]],
        con: duckdb.DuckDBPyConnection | None = None,
    ) -> int:
        """Append rows (dicts keyed by column name) to ``raw.<table>`` in one transaction.

        Columns missing from a row are null; an unknown key is a programming error.
        """
        return self.append_many({table: rows}, con=con)[table]

    def append_many(
        self,
        tables: Mapping[str, Iterable[Mapping[str, Any]]],
        con: duckdb.DuckDBPyConnection | None = None,
    ) -> dict[str, int]:
        """Append rows to several raw tables in ONE transaction: all of them or none.

        E.g. a patient's ``pacs_studies`` rows together with the ``pacs_queries`` row saying
        its query succeeded, so a run killed half way never leaves one without the other.
        """
        statements: list[tuple[str, list[Any]]] = []
        counts: dict[str, int] = {}
        for table, rows in tables.items():
            names = RAW_TABLES[table].column_names
            batch: list[Sequence[Any]] = []
            for row in rows:
                extra = set(row) - set(names)
                if extra:
                    raise KeyError(f"raw.{table} has no column(s) {sorted(extra)}")
                batch.append(tuple(row.get(n) for n in names))
            counts[table] = len(batch)
            if batch:
                statements.append(_insert_statement(table, batch))
        if not statements:
            return counts
        if con is not None:
            _append_batches(con, statements)
        else:
            with self.connect() as own:
                _append_batches(own, statements)
        return counts

    def read_relation(
        self,
        relation: str,
        where: str = "",
        params: Sequence[Any] = (),
        *,
        columns: Sequence[str] = (),
        required: str | None = None,
    ) -> list[dict[str, Any]]:
        """Rows of a relation (``main.ingest_manifest``, ``raw.xnat_syncs``) as dicts; see
        ``read_table``."""
        cols, rows = self.read_table(relation, where, params, columns=columns, required=required)
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def read_table(
        self,
        relation: str,
        where: str = "",
        params: Sequence[Any] = (),
        *,
        columns: Sequence[str] = (),
        required: str | None = None,
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """The one reader of marts: column names and rows as tuples (lighter than dicts at
        200k rows) of ``select <columns or *> from <relation> <where>``. A relation dbt has not
        built yet reads as empty, or is a ``StepFailed`` with the ``required`` message."""
        with self.connect(read_only=True) as con:
            exists = con.execute(
                "select count(*) from information_schema.tables "
                "where table_schema || '.' || table_name = ? or table_name = ?",
                [relation, relation],
            ).fetchone()
            if not exists or not exists[0]:
                if required is not None:
                    raise StepFailed(f"{relation} has not been built in {self.label}: {required}")
                return list(columns), []
            cur = con.execute(
                f"select {', '.join(columns) or '*'} from {relation} {where}", list(params)
            )
            return [d[0] for d in cur.description], cur.fetchall()


#: Files (device, inode) this process has applied the raw DDL to: a long command opens the
#: warehouse once per transaction, and the DDL (a third of an open's cost) need not run each
#: time.
_DDL_DONE: set[tuple[int, int]] = set()


def _apply_ddl_once(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """The raw DDL, unless this process applied it to this file already and its raw tables
    are all there (a file made anew may reuse a deleted one's inode: the count tells)."""
    st = os.stat(path)
    if (st.st_dev, st.st_ino) in _DDL_DONE:
        row = con.execute(
            "select count(*) from duckdb_tables()"
            " where database_name = current_database() and schema_name = 'raw'"
        ).fetchone()
        if row is not None and row[0] >= len(RAW_TABLES):
            return
    apply_ddl(con)
    _DDL_DONE.add((st.st_dev, st.st_ino))


def _connect_waiting(
    path: Path, read_only: bool, wait: float
) -> tuple[duckdb.DuckDBPyConnection, Callable[[], None]]:
    """The file opened (``attached.open_file``: attached to this process's DuckDB instance)
    and what closes it, waiting (bounded) while another process that does not take our lock
    (a SQL client, a dbt outside this project) has the file open; DuckDB's lock error becomes
    ``WarehouseBusy`` when the wait runs out."""
    deadline, pause, said = time.monotonic() + wait, 0.05, False
    while True:
        # DuckDB creates the file and its WAL with the process umask: owner-only from the start.
        old_umask = os.umask(0o077)
        try:
            return open_file(path, read_only)
        except duckdb.IOException as e:
            if not _is_lock_error(e):
                raise
            if time.monotonic() >= deadline:
                raise WarehouseBusy(
                    f"warehouse busy: {path} is open in another process that is not pacs2xnat "
                    f"(a SQL client?) and stayed open for {wait:.0f} s; try again when it closes"
                ) from None
            if not said:
                console.say(f"{path} is open in another process; waiting up to {wait:.0f} s")
                said = True
        finally:
            os.umask(old_umask)
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, 1.0)


def _insert_statement(table: str, batch: list[Sequence[Any]]) -> tuple[str, list[Any]]:
    """One ``insert ... select unnest(?), unnest(?), ...`` with one list parameter per column,
    each cast to the column's type. Measured on 10,000 rows of ``raw.pacs_studies``' 17
    columns: 0.18 s, where multi-row ``values (?, ...), (?, ...)`` statements of 256 rows took
    2.8 s (DuckDB binds each of their 170,000 parameters; its ``executemany`` runs one
    statement per row, slower still)."""
    columns = RAW_TABLES[table].columns
    selects = ", ".join(f"unnest(cast(? as {kind.split()[0]}[]))" for _, kind in columns)
    names = ", ".join(name for name, _ in columns)
    params = [list(values) for values in zip(*batch, strict=True)]
    return f"insert into raw.{table} ({names}) select {selects}", params


def _append_batches(
    con: duckdb.DuckDBPyConnection, statements: list[tuple[str, list[Any]]]
) -> None:
    con.execute("begin transaction")
    try:
        for sql, params in statements:
            con.execute(sql, params)
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
