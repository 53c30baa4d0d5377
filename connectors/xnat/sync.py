"""``pacs2xnat sync``: read back every imaging session of the XNAT project into
``raw.xnat_sessions``, as one snapshot.

Paged (``limit``/``offset``) so 50,000 sessions never sit in memory at once; the rows are
appended a batch at a time (one short transaction each: the warehouse is free between them),
and the snapshot becomes the current one only when its ``raw.xnat_syncs`` row is written after
the last batch, so a half sync never looks like a snapshot (``int_xnat_sessions__current``
reads complete snapshots only). Scan counts: XNAT has
no scan-count column, and one scans listing per session is 50,000 calls, so a session already
in the previous snapshot with the same ``insert_date`` keeps its count (pacs2xnat never adds
scans to an archived session), and only new sessions are counted, a few at a time.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import duckdb

from connectors.clock import utcnow
from connectors.warehouse.journal import append_or_journal
from connectors.warehouse.runs import RunContext
from connectors.xnat.client import XnatClient

logger = logging.getLogger(__name__)

COUNT_WORKERS = 4
BATCH = 500


def run_sync(rc: RunContext) -> dict[str, Any]:
    """Log in, check the project, write the snapshot. Returns the run summary."""
    with XnatClient(rc.settings) as client:
        client.check_project()
        return sync_sessions(rc, client)


def new_sync_id() -> str:
    return utcnow().strftime("%Y%m%dT%H%M%SZ-sync-") + uuid.uuid4().hex[:8]


def _previous_counts(con: duckdb.DuckDBPyConnection, project: str) -> dict[str, tuple[str, int]]:
    """Scan counts of the latest complete snapshot of the project: session id -> (insert
    date, count)."""
    rows = con.execute(
        "select s.session_id, s.insert_date, s.scan_count from raw.xnat_sessions s "
        "where s.project = ? and s.scan_count is not null and s.sync_id = ("
        "  select sync_id from raw.xnat_syncs where project = ? "
        "  order by finished_at desc, sync_id desc limit 1)",
        [project, project],
    ).fetchall()
    return {sid: (ins or "", int(n)) for sid, ins, n in rows}


def sync_sessions(
    rc: RunContext, client: XnatClient, page_size: int | None = None
) -> dict[str, Any]:
    """The snapshot, with an open client (``load`` reuses its own); returns its counts."""
    sync_id, started = new_sync_id(), utcnow()
    project = client.project
    counted = reused = total = 0
    subjects: set[str] = set()
    pages = client.iter_sessions(**({"page_size": page_size} if page_size else {}))
    with rc.warehouse.connect(read_only=True) as con:
        previous = _previous_counts(con, project)
    # Each page of rows is its own short transaction: the warehouse is free between pages.
    with ThreadPoolExecutor(COUNT_WORKERS) as pool:
        batch: list[dict[str, str]] = []
        for row in pages:
            batch.append(row)
            if len(batch) >= BATCH:
                c = _write(rc, batch, previous, client, pool, sync_id, started)
                counted, reused, total = counted + c, reused + len(batch) - c, total + len(batch)
                subjects.update(r.get("subject_ID", "") for r in batch)
                batch = []
        if batch:
            c = _write(rc, batch, previous, client, pool, sync_id, started)
            counted, reused, total = counted + c, reused + len(batch) - c, total + len(batch)
            subjects.update(r.get("subject_ID", "") for r in batch)
        now = utcnow()
        append_or_journal(
            rc.warehouse,
            {
                "xnat_syncs": [
                    {
                        "run_id": rc.run_id,
                        "loaded_at": now,
                        "sync_id": sync_id,
                        "project": project,
                        "started_at": started,
                        "finished_at": now,
                        "sessions": total,
                        "subjects": len(subjects),
                    }
                ]
            },
        )
    logger.info("sync: %d sessions of %s (%d scan counts read)", total, project, counted)
    return {
        "project": project,
        "sessions": total,
        "subjects": len(subjects),
        "scan_counts_read": counted,
        "scan_counts_reused": reused,
    }


def _write(
    rc: RunContext,
    batch: Sequence[dict[str, str]],
    previous: dict[str, tuple[str, int]],
    client: XnatClient,
    pool: ThreadPoolExecutor,
    sync_id: str,
    synced_at: Any,
) -> int:
    """Append one batch of listing rows; returns how many scan counts it had to read."""
    need = [
        r["ID"]
        for r in batch
        if r.get("ID") not in previous or previous[r["ID"]][0] != r.get("insert_date", "")
    ]
    counts = dict(zip(need, pool.map(client.scan_count, need), strict=True))
    now = utcnow()
    append_or_journal(
        rc.warehouse,
        {
            "xnat_sessions": [
                {
                    "run_id": rc.run_id,
                    "loaded_at": now,
                    "sync_id": sync_id,
                    "synced_at": synced_at,
                    "project": client.project,
                    "subject_id": r.get("subject_ID") or None,
                    "subject_label": r.get("subject_label") or None,
                    "session_id": r.get("ID", ""),
                    "session_label": r.get("label") or None,
                    "xsi_type": r.get("xsiType") or None,
                    "modality": r.get("modality") or None,
                    "session_date": r.get("date") or None,
                    "study_instance_uid": r.get("UID") or None,
                    "scan_count": counts.get(
                        r.get("ID", ""), previous.get(r.get("ID", ""), ("", None))[1]
                    ),
                    "insert_date": r.get("insert_date") or None,
                }
                for r in batch
            ]
        },
    )
    return len(need)
