"""The DuckDB warehouse: open it briefly, append raw rows, read marts.

The file is created owner-only (0600) and the raw DDL (``schema.py``) is applied on every
connection. One writer at a time: ``lock.py`` holds an exclusive ``flock`` for a CLI invocation,
so a second one gets a clear ``WarehouseBusy`` instead of DuckDB's lock error.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb

from connectors.errors import StepFailed, WarehouseBusy
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
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection with the raw DDL applied; DuckDB's lock error becomes ``WarehouseBusy``."""
        if read_only and not self.path.exists():
            self.ensure()
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # DuckDB creates the file and its WAL with the process umask: owner-only from the start.
        old_umask = os.umask(0o077)
        try:
            con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as e:
            if _is_lock_error(e):
                raise WarehouseBusy(
                    f"warehouse busy: {self.path} is open for writing by another process "
                    "(another pacs2xnat, a dbt build or a SQL client); try again when it ends"
                ) from None
            raise
        finally:
            os.umask(old_umask)
        try:
            if not read_only:
                os.chmod(self.path, 0o600)
                apply_ddl(con)
            yield con
        finally:
            con.close()

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
            statements.extend(_insert_statements(table, names, batch))
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


#: Rows per multi-row INSERT: DuckDB's executemany runs one statement per row, ~10× slower.
INSERT_CHUNK = 256


def _insert_statements(
    table: str, names: Sequence[str], batch: list[Sequence[Any]]
) -> list[tuple[str, list[Any]]]:
    """Multi-row ``insert ... values (?, ...), (?, ...)`` statements with flattened parameters."""
    cols, marks = ", ".join(names), "(" + ", ".join("?" * len(names)) + ")"
    out = []
    for i in range(0, len(batch), INSERT_CHUNK):
        chunk = batch[i : i + INSERT_CHUNK]
        values = ", ".join([marks] * len(chunk))
        params = [v for row in chunk for v in row]
        out.append((f"insert into raw.{table} ({cols}) values {values}", params))
    return out


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
