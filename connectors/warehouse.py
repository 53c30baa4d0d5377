"""The DuckDB warehouse: the ``raw`` schema that connectors write, and the marts they read.

Every raw table is append-only and every row carries the ``run_id`` of the CLI invocation that
wrote it (``raw.runs``). The DDL is owned here and run on every connection, so a fresh clone can
``dbt build`` an empty warehouse and get empty marts. The file is created owner-only (0600).

One writer at a time: a CLI invocation that writes holds an exclusive ``flock`` on
``<warehouse>.lock`` for its whole life (``WarehouseLock``), so a second one gets a clear
``WarehouseBusy`` instead of DuckDB's lock error or, worse, two processes appending at once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from connectors.errors import WarehouseBusy


@dataclass(frozen=True)
class RawTable:
    """A raw table's load semantics, declared once (as dlt declares write_disposition)."""

    name: str
    grain: str
    columns: tuple[tuple[str, str], ...]
    primary_key: tuple[str, ...]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.columns)

    def ddl(self) -> str:
        cols = ",\n    ".join(f"{c} {t}" for c, t in self.columns)
        return f"create table if not exists raw.{self.name} (\n    {cols}\n)"


_RUN = (("run_id", "varchar not null"), ("loaded_at", "timestamp not null"))

RAW_TABLES: dict[str, RawTable] = {
    t.name: t
    for t in (
        RawTable(
            "runs",
            "one row per CLI invocation; completed in place when the invocation ends",
            (
                ("run_id", "varchar not null"),
                ("command", "varchar not null"),
                ("arguments", "varchar"),  # JSON list, secrets never present
                ("user_name", "varchar"),
                ("host_name", "varchar"),
                ("tool_version", "varchar"),
                ("config_path", "varchar"),
                ("input_files", "varchar"),  # JSON list of {path, sha256}
                ("rules_sha256", "varchar"),
                ("started_at", "timestamp not null"),
                ("finished_at", "timestamp"),
                ("outcome", "varchar"),  # running | success | partial | failed
                ("exit_code", "integer"),
                ("summary", "varchar"),  # JSON
                ("loaded_at", "timestamp not null"),
            ),
            ("run_id",),
        ),
        RawTable(
            "master_patients",
            "one row per data row of the master patient list, per import run",
            (
                *_RUN,
                ("source_file", "varchar not null"),
                ("source_sha256", "varchar not null"),
                ("source_sheet", "varchar"),
                ("source_row", "integer not null"),
                ("mrn", "varchar not null"),
                ("nhs_number", "varchar"),
                ("reference_date", "date"),
                ("status", "varchar not null"),
                ("patient_name", "varchar"),
                ("birth_date", "date"),
                ("repairs", "varchar"),
            ),
            ("run_id", "source_row"),
        ),
        RawTable(
            "pacs_queries",
            "one row per patient C-FIND (all its sub-queries) in one run, success or not",
            (
                *_RUN,
                ("query_id", "varchar not null"),
                ("mrn", "varchar not null"),
                ("window_from", "date"),
                ("window_to", "date"),
                ("started_at", "timestamp not null"),
                ("finished_at", "timestamp not null"),
                ("outcome", "varchar not null"),  # success | failed
                ("studies_found", "integer not null"),
                ("sub_queries", "integer not null"),
                ("status_code", "varchar"),
                ("message", "varchar"),
            ),
            ("query_id",),
        ),
        RawTable(
            "pacs_studies",
            "one row per study returned by one patient's C-FIND in one run (DICOM values as sent)",
            (
                *_RUN,
                ("query_id", "varchar not null"),
                ("queried_at", "timestamp not null"),
                ("query_mrn", "varchar not null"),
                ("window_from", "date"),
                ("window_to", "date"),
                ("accession_number", "varchar"),
                ("patient_id", "varchar"),
                ("study_date", "varchar"),
                ("study_time", "varchar"),
                ("study_description", "varchar"),
                ("study_instance_uid", "varchar not null"),
                ("modalities_in_study", "varchar"),
                ("number_of_study_related_instances", "varchar"),
                ("patient_name", "varchar"),
                ("patient_birth_date", "varchar"),
                ("specific_character_set", "varchar"),
            ),
            ("query_id", "study_instance_uid"),
        ),
        RawTable(
            "xnat_sessions",
            "one row per imaging session in the XNAT project, per sync run (a snapshot)",
            (
                *_RUN,
                ("synced_at", "timestamp not null"),
                ("project", "varchar not null"),
                ("subject_id", "varchar"),
                ("subject_label", "varchar"),
                ("session_id", "varchar not null"),
                ("session_label", "varchar"),
                ("xsi_type", "varchar"),
                ("modality", "varchar"),
                ("session_date", "varchar"),
                ("study_instance_uid", "varchar"),
                ("scan_count", "integer"),
                ("insert_date", "varchar"),
            ),
            ("run_id", "session_id"),
        ),
        RawTable(
            "ingest_attempts",
            "one row per attempt to put one study into XNAT (load or retry), whatever its end",
            (
                *_RUN,
                ("attempt_id", "varchar not null"),
                ("study_instance_uid", "varchar not null"),
                ("accession_number", "varchar"),
                ("nhs_number", "varchar"),
                ("subject_label", "varchar"),
                ("session_label", "varchar"),
                ("mode", "varchar not null"),  # direct | dqr
                ("retrieve_method", "varchar"),  # c-get | c-move | dqr
                ("started_at", "timestamp not null"),
                ("finished_at", "timestamp not null"),
                ("outcome", "varchar not null"),  # loaded | already_present | failed
                ("reason_category", "varchar"),  # seeds/failure_reasons.csv; null when loaded
                ("message", "varchar"),
                ("files_expected", "integer"),
                ("files_received", "integer"),
                ("files_archived", "integer"),
                ("bytes_transferred", "bigint"),
                ("xnat_session_id", "varchar"),
            ),
            ("attempt_id",),
        ),
    )
}


def utcnow() -> dt.datetime:
    """Naive UTC timestamp, the form every ``*_at`` column holds."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _is_lock_error(e: Exception) -> bool:
    text = str(e)
    return "lock" in text.lower() and ("Conflicting" in text or "Could not set lock" in text)


class Warehouse:
    """The DuckDB file. Open it briefly with ``connect()``; never across a ``dbt build``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

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
                con.execute("create schema if not exists raw")
                for table in RAW_TABLES.values():
                    con.execute(table.ddl())
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
        self, relation: str, where: str = "", params: Sequence[Any] = ()
    ) -> list[dict[str, Any]]:
        """Rows of a mart (``main.ingest_manifest``) as dicts; empty if dbt has not built it yet."""
        with self.connect(read_only=True) as con:
            exists = con.execute(
                "select count(*) from information_schema.tables "
                "where table_schema || '.' || table_name = ? or table_name = ?",
                [relation, relation],
            ).fetchone()
            if not exists or not exists[0]:
                return []
            cur = con.execute(f"select * from {relation} {where}", list(params))
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


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


class WarehouseLock:
    """An exclusive, non-blocking ``flock`` on ``<warehouse>.lock`` held for one CLI invocation.

    The lock file names the holder (pid, command, start time) so the second invocation's
    error says who has it. The kernel drops the lock if the holder dies, even by SIGKILL.
    """

    def __init__(self, warehouse_path: Path) -> None:
        self.path = Path(str(warehouse_path) + ".lock")
        self._fd: int | None = None

    def acquire(self, command: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
            os.close(fd)
            try:
                info = json.loads(holder)
                who = f"pacs2xnat {info['command']} (pid {info['pid']}, since {info['started']})"
            except (ValueError, KeyError):
                who = "another pacs2xnat"
            raise WarehouseBusy(
                f"warehouse busy: {who} is using {self.path.with_suffix('')}; "
                "wait for it to finish (one writer at a time)"
            ) from None
        os.ftruncate(fd, 0)
        stamp = {
            "pid": os.getpid(),
            "command": command,
            "started": utcnow().isoformat(" ", "seconds"),
        }
        os.pwrite(fd, json.dumps(stamp).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> WarehouseLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
