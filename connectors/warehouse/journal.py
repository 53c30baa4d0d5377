"""Nothing lost while waiting: what a long command (load, query, sync) learns while the
warehouse is busy goes to an append-only local journal, and into the warehouse as soon as it
can be.

The journal is ``<warehouse>.journal``: JSON lines, each one entry (an id, when, and the raw
rows of one transaction, by table), written with one ``write`` and ``fsync``-ed before the
command goes on; owner-only (0600) like the warehouse. It holds raw rows only (attempt, query
and sync rows), never a secret. ``<warehouse>.journal.lock`` (a ``flock``) keeps its writers
and its replayer apart.

Replay (``replay``) writes each entry's rows together with a ``raw.journal_entries`` row
naming the entry, in one transaction, and skips entries already there: a replay interrupted
(SIGKILL, power cut) and run again writes nothing twice. Once every entry is in the
warehouse the file is emptied. Every invocation replays first (``RunContext.start``), so a
loader killed while its journal held rows writes them at its next start, before anything else.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from connectors.clock import utcnow
from connectors.errors import WarehouseBusy
from connectors.warehouse.lock import holding, wait_seconds
from connectors.warehouse.store import Warehouse

logger = logging.getLogger(__name__)

#: How long a journaling writer waits for the warehouse before it journals the rows instead.
JOURNAL_WAIT_SECONDS = 2.0
#: the wait once the journal already holds rows (the warehouse was busy a moment ago): one
#: short try, not JOURNAL_WAIT_SECONDS per row while an admin's builds follow one another
#: (measured: a 60-study load took 1.98x as long, benchmarks/admin_wait)
JOURNAL_RETRY_SECONDS = 0.2
ENTRIES_TABLE = "journal_entries"

Rows = Mapping[str, Sequence[Mapping[str, Any]]]


def journal_path(warehouse_path: Path) -> Path:
    return Path(str(warehouse_path) + ".journal")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat(" ") if isinstance(value, dt.datetime) else value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot journal a {type(value).__name__}")


@contextlib.contextmanager
def _journal_locked(path: Path) -> Iterator[None]:
    lock = Path(str(path) + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held only to append one line or to replay
        yield
    finally:
        os.close(fd)


def add(warehouse_path: Path, tables: Rows) -> str:
    """Append one entry (the rows of one transaction) to the journal, fsynced; its id."""
    path = journal_path(warehouse_path)
    entry_id = str(uuid.uuid4())
    entry = {
        "entry_id": entry_id,
        "journaled_at": utcnow().isoformat(" "),
        "pid": os.getpid(),
        "tables": {t: [dict(r) for r in rows] for t, rows in tables.items() if rows},
    }
    line = (json.dumps(entry, default=_jsonable, separators=(",", ":")) + "\n").encode()
    with _journal_locked(path):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
    logger.info("warehouse busy: %s journaled in %s", _describe(tables), path)
    return entry_id


def pending(warehouse_path: Path) -> bool:
    """Whether the journal holds entries (maybe written already: replay checks)."""
    try:
        return journal_path(warehouse_path).stat().st_size > 0
    except FileNotFoundError:
        return False


def _read(path: Path) -> list[dict[str, Any]]:
    entries = []
    try:
        with open(path, "rb") as f:
            for n, raw in enumerate(f, 1):
                if not raw.endswith(b"\n"):  # a line cut by a crash mid-write: never fsynced
                    logger.warning("%s line %d: incomplete entry ignored", path, n)
                    continue
                entries.append(json.loads(raw))
    except FileNotFoundError:
        return []
    return entries


def replay(warehouse: Warehouse, wait: float | None = None) -> int:
    """Write the journal's entries not yet in the warehouse (each with its
    ``raw.journal_entries`` row, in one transaction), then empty the journal; how many were
    written. ``WarehouseBusy`` (nothing lost: the journal stays) if the warehouse stays busy."""
    path = journal_path(warehouse.path)
    if not pending(warehouse.path):
        return 0
    written = 0
    with holding(warehouse.path, wait), _journal_locked(path):
        entries = _read(path)
        if entries:
            with warehouse.connect(wait=wait) as con:
                ids = [e["entry_id"] for e in entries]
                marks = ", ".join("?" * len(ids))
                done = {
                    r[0]
                    for r in con.execute(
                        f"select entry_id from raw.{ENTRIES_TABLE} where entry_id in ({marks})",
                        ids,
                    ).fetchall()
                }
                for e in entries:
                    if e["entry_id"] in done:
                        continue
                    tables = dict(e["tables"])
                    tables[ENTRIES_TABLE] = [_entry_row(e)]
                    warehouse.append_many(tables, con=con)
                    written += 1
        with open(path, "r+b") as f:  # every entry is in the warehouse now
            f.truncate(0)
            os.fsync(f.fileno())
    if written:
        logger.info("journal: %d entries written to the warehouse from %s", written, path)
    return written


def _entry_row(e: Mapping[str, Any]) -> dict[str, Any]:
    now = utcnow()
    return {
        "run_id": _run_id(e),
        "loaded_at": now,
        "entry_id": e["entry_id"],
        "journaled_at": e["journaled_at"],
        "row_counts": json.dumps({t: len(rows) for t, rows in e["tables"].items()}),
    }


def _run_id(e: Mapping[str, Any]) -> str:
    for rows in e["tables"].values():
        for r in rows:
            if r.get("run_id"):
                return str(r["run_id"])
    return "journal"


def _describe(tables: Rows) -> str:
    return ", ".join(f"{len(rows)} {t} rows" for t, rows in tables.items() if rows)


def append_or_journal(warehouse: Warehouse, tables: Rows) -> bool:
    """Write the rows of one transaction now (the journal's older entries first, in order),
    or, when the warehouse stays busy for ``JOURNAL_WAIT_SECONDS``, journal them; True when
    they reached the warehouse. For long commands that must not stall on another's build: once
    the journal holds rows, only ``JOURNAL_RETRY_SECONDS``."""
    busy_lately = pending(warehouse.path)
    wait = min(JOURNAL_RETRY_SECONDS if busy_lately else JOURNAL_WAIT_SECONDS, wait_seconds())
    try:
        with holding(warehouse.path, wait):
            replay(warehouse, wait)
            with warehouse.connect(wait=wait) as con:
                warehouse.append_many(tables, con=con)
        return True
    except WarehouseBusy:
        add(warehouse.path, tables)
        return False


__all__ = [
    "ENTRIES_TABLE",
    "JOURNAL_RETRY_SECONDS",
    "JOURNAL_WAIT_SECONDS",
    "add",
    "append_or_journal",
    "journal_path",
    "pending",
    "replay",
]
