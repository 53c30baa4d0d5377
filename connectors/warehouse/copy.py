"""``pacs2xnat warehouse copy --to postgresql://...``: the DuckDB file's raw schema into an
empty PostgreSQL warehouse (the marts are rebuilt there by dbt), checked before it commits.

Every raw table is copied in ONE PostgreSQL transaction (``COPY ... FROM STDIN``); before the
commit each table's row count and content hash are read back from PostgreSQL and compared
with the DuckDB file's, so the copy is whole and exact or nothing is written. The hash of a
table is the SHA-256 of its rows' own hashes in sorted order: independent of row order and of
either database's collation. A target that already holds raw rows is refused (nothing is
merged or replaced). The copying invocation's own ``raw.runs`` row is not copied (it is still
running).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from connectors.errors import InputError, StepFailed
from connectors.warehouse.postgres import PostgresWarehouse
from connectors.warehouse.schema import RAW_TABLES
from connectors.warehouse.store import Warehouse

logger = logging.getLogger(__name__)

BATCH = 10_000


@dataclass(frozen=True)
class TableCheck:
    table: str
    rows: int
    sha256: str


def _canonical(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value).replace("\\", "\\\\")


def table_digest(rows: Iterable[Sequence[Any]]) -> TableCheck:
    """Row count and order-independent SHA-256 of rows (tuples in the table's column order)."""
    digests = sorted(
        hashlib.sha256("\t".join(_canonical(v) for v in row).encode()).digest() for row in rows
    )
    h = hashlib.sha256()
    for d in digests:
        h.update(d)
    return TableCheck("", len(digests), h.hexdigest())


def _select(table: str, skip_run: str) -> tuple[str, list[Any]]:
    cols = ", ".join(RAW_TABLES[table].column_names)
    if table == "runs":
        return f"select {cols} from raw.{table} where run_id <> ?", [skip_run]
    return f"select {cols} from raw.{table}", []


def _read(con: Any, table: str, skip_run: str) -> list[tuple[Any, ...]]:
    sql, params = _select(table, skip_run)
    return [tuple(r) for r in con.execute(sql, params).fetchall()]


def copy_to_postgres(
    source: Warehouse, target: PostgresWarehouse, skip_run: str
) -> list[TableCheck]:
    """Copy every raw table of ``source`` (the DuckDB file) into ``target``; returns each
    table's rows and hash, equal on both sides. ``InputError`` when the target is not empty,
    ``StepFailed`` (and nothing written) when a table does not read back the same."""
    checks: list[TableCheck] = []
    pg = target.open()
    try:
        for table in RAW_TABLES:
            row = pg.execute(f"select count(*) from raw.{table}").fetchone()
            if row and row[0]:
                raise InputError(
                    f"{target.label}: raw.{table} already holds {row[0]} rows; "
                    "warehouse copy only fills an empty PostgreSQL warehouse (nothing merged)"
                )
        with source.connect(read_only=True) as duck, pg.raw.transaction():
            for table, spec in RAW_TABLES.items():
                rows = _read(duck, table, skip_run)
                expected = table_digest(rows)
                cols = ", ".join(spec.column_names)
                with (
                    pg.raw.cursor() as cur,
                    cur.copy(
                        f"copy raw.{table} ({cols}) from stdin"  # type: ignore[arg-type]
                    ) as copy,
                ):
                    for r in rows:
                        copy.write_row(r)
                back = table_digest(
                    tuple(r)
                    for r in pg.raw.execute(f"select {cols} from raw.{table}")  # type: ignore[arg-type]
                )
                if back != expected:
                    raise StepFailed(
                        f"raw.{table}: {expected.rows} rows in {source.label} but "
                        f"{back.rows} read back from {target.label} (or their hashes differ); "
                        "nothing was written"
                    )
                checks.append(TableCheck(table, expected.rows, expected.sha256))
                logger.info(
                    "copied raw.%s: %d rows, sha256 %s", table, expected.rows, expected.sha256
                )
    finally:
        pg.close()
    return checks


__all__ = ["TableCheck", "copy_to_postgres", "table_digest"]
