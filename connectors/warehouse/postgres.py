"""The warehouse on PostgreSQL (``[warehouse] url = "postgresql://host:port/db"``), psycopg 3.

The same raw DDL (``schema.py``) and the same append-only rules as the DuckDB file: this class
is a ``Warehouse`` whose connections are PostgreSQL ones, so every connector's SQL (qmark
``?`` parameters, ``begin transaction``/``commit``) runs unchanged. The password never lives in
the URL or the config: libpq takes it from ``$PGPASSWORD`` or ``~/.pgpass`` (``$PGPASSFILE``).
Many processes share it at once, so there is no writer lock (``exclusive = False``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg

from connectors.config import POSTGRES_SCHEMES, check_postgres_url
from connectors.errors import Unavailable
from connectors.warehouse.schema import apply_ddl
from connectors.warehouse.store import Warehouse

#: one number for the advisory lock taken while the raw DDL runs (concurrent ``create table
#: if not exists`` in PostgreSQL can otherwise collide on the catalogue)
DDL_LOCK = 0x70616373  # "pacs"
_DDL_DONE: set[str] = set()


def qmark_to_format(sql: str) -> str:
    """``?`` placeholders (DuckDB's) as psycopg's ``%s``, and literal ``%`` as ``%%``;
    anything inside single quotes is left alone."""
    out: list[str] = []
    quoted = False
    for ch in sql:
        if ch == "'":
            quoted = not quoted
            out.append(ch)
        elif ch == "%":
            out.append("%%")
        elif ch == "?" and not quoted:
            out.append("%s")
        else:
            out.append(ch)
    return "".join(out)


class PgConnection:
    """A psycopg connection that speaks the connectors' SQL: ``execute(sql, [params])`` with
    ``?`` placeholders, returning the cursor (``fetchone``, ``fetchall``, ``description``)."""

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> psycopg.Cursor[Any]:
        if params:
            return self.raw.execute(qmark_to_format(sql), list(params))  # type: ignore[arg-type]
        return self.raw.execute(sql)  # type: ignore[arg-type]

    def close(self) -> None:
        self.raw.close()


class PostgresWarehouse(Warehouse):
    """The shared warehouse: one PostgreSQL database, many processes at once."""

    exclusive = False

    def __init__(self, url: str, local_dir: Path | None = None) -> None:
        super().__init__(Path(local_dir or ".") / "postgresql")
        self.url = check_postgres_url(url)

    @property
    def label(self) -> str:
        return self.url

    def ensure(self) -> None:
        with self.connect():
            pass

    def open(self) -> PgConnection:
        """A new autocommit connection (explicit ``begin``/``commit`` where several statements
        must go together), the raw DDL applied once per process, UTC timestamps."""
        try:
            raw = psycopg.connect(self.url, autocommit=True, options="-c TimeZone=UTC")
        except psycopg.OperationalError as e:
            raise Unavailable(f"warehouse {self.url} unreachable: {e}".strip()) from None
        con = PgConnection(raw)
        if self.url not in _DDL_DONE:
            try:
                with raw.transaction():
                    raw.execute("select pg_advisory_xact_lock(%s)", [DDL_LOCK])
                    apply_ddl(con)
            except BaseException:
                raw.close()
                raise
            _DDL_DONE.add(self.url)
        return con

    @contextlib.contextmanager
    def connect(self, read_only: bool = False, wait: float | None = None) -> Iterator[Any]:
        """``wait`` is DuckDB's (its writer lock): PostgreSQL takes concurrent writers."""
        con = self.open()
        if read_only:  # a reader never writes, as DuckDB's read-only connection
            con.execute("set default_transaction_read_only = on")
        try:
            yield con
        finally:
            con.close()


#: one dbt at a time on a database: two builds replacing the same marts would collide
DBT_LOCK = 0x64627421  # "dbt!"


@contextlib.contextmanager
def dbt_lock(url: str) -> Iterator[None]:
    """Wait for, and hold, the database's dbt lock (a session advisory lock, gone with the
    session if this process dies) while dbt runs."""
    try:
        con = psycopg.connect(url, autocommit=True)
    except psycopg.OperationalError as e:
        raise Unavailable(f"warehouse {url} unreachable: {e}".strip()) from None
    try:
        con.execute("select pg_advisory_lock(%s)", [DBT_LOCK])
        yield
    finally:
        con.close()


def is_postgres_url(url: str) -> bool:
    return url.startswith(POSTGRES_SCHEMES)


__all__ = ["PgConnection", "PostgresWarehouse", "dbt_lock", "is_postgres_url", "qmark_to_format"]
