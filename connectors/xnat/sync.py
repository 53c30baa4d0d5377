"""``pacs2xnat sync``: read back every imaging session of the XNAT project into
``raw.xnat_sessions``, as one snapshot tagged with the run.

Paged (``limit``/``offset``) so 50,000 sessions never sit in memory at once; every page is
appended inside one transaction, committed only when the whole listing has been read, so a
half sync never looks like a snapshot. Scan counts: XNAT has no scan-count column, and one
scans listing per session is 50,000 calls, so a session already in the previous snapshot with
the same ``insert_date`` keeps its count (pacs2xnat never adds scans to an archived session),
and only new sessions are counted, a few at a time.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import duckdb

from connectors import __version__
from connectors.clock import utcnow
from connectors.warehouse.runs import RunContext, new_run_id
from connectors.warehouse.schema import RAW_TABLES
from connectors.xnat.client import XnatClient

logger = logging.getLogger(__name__)

COUNT_WORKERS = 4


def run_sync(rc: RunContext) -> dict[str, Any]:
    """Log in, check the project, write the snapshot. Returns the run summary."""
    with XnatClient(rc.settings) as client:
        client.check_project()
        # Inside another command (``run``), the snapshot gets its own successful sync run,
        # so the models see it as the latest snapshot.
        summary = sync_sessions(rc, client, as_own_run=rc.command != "sync")
    summary.pop("sessions_by_label")
    return summary


def _previous_counts(con: duckdb.DuckDBPyConnection, project: str) -> dict[str, tuple[str, int]]:
    row = con.execute(
        "select run_id from raw.xnat_sessions where project = ? order by synced_at desc limit 1",
        [project],
    ).fetchone()
    if not row:
        return {}
    rows = con.execute(
        "select session_id, insert_date, scan_count from raw.xnat_sessions "
        "where run_id = ? and project = ? and scan_count is not null",
        [row[0], project],
    ).fetchall()
    return {sid: (ins or "", int(n)) for sid, ins, n in rows}


def sync_sessions(
    rc: RunContext, client: XnatClient, page_size: int | None = None, as_own_run: bool = False
) -> dict[str, Any]:
    """The snapshot, with an open client (``load`` reuses its own). Returns counts and the
    sessions now in XNAT for the caller's own use (``sessions_by_label``: label -> (ID, UID)).

    ``as_own_run`` (``load``'s fresh sync): the snapshot gets its own run id and a successful
    ``sync`` row in ``raw.runs``, committed with it, so the models (which read the latest
    successful sync) see it when ``load`` rebuilds the manifest while its own run is open."""
    spec = RAW_TABLES["xnat_sessions"]
    names = spec.column_names
    sql = (
        f"insert into raw.xnat_sessions ({', '.join(names)}) values ({', '.join('?' * len(names))})"
    )
    synced_at = utcnow()
    run_id = new_run_id() if as_own_run else rc.run_id
    project = client.project
    counted = reused = 0
    subjects: set[str] = set()
    labels: dict[str, tuple[str, str]] = {}
    total = 0
    pages = client.iter_sessions(**({"page_size": page_size} if page_size else {}))
    with rc.warehouse.connect() as con, ThreadPoolExecutor(COUNT_WORKERS) as pool:
        previous = _previous_counts(con, project)
        con.execute("begin transaction")
        try:
            batch: list[dict[str, str]] = []
            for row in pages:
                batch.append(row)
                if len(batch) >= 500:
                    c, r = _write(con, sql, names, batch, previous, client, pool, run_id, synced_at)
                    counted, reused = counted + c, reused + r
                    total += len(batch)
                    _note(batch, subjects, labels)
                    batch = []
            if batch:
                c, r = _write(con, sql, names, batch, previous, client, pool, run_id, synced_at)
                counted, reused = counted + c, reused + r
                total += len(batch)
                _note(batch, subjects, labels)
            if as_own_run:
                _record_sync_run(con, rc, run_id, synced_at, total)
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise
    logger.info("sync: %d sessions of %s (%d scan counts read)", total, project, counted)
    return {
        "project": project,
        "sessions": total,
        "subjects": len(subjects),
        "scan_counts_read": counted,
        "scan_counts_reused": reused,
        "sessions_by_label": labels,
    }


def _record_sync_run(
    con: duckdb.DuckDBPyConnection, rc: RunContext, run_id: str, started: Any, sessions: int
) -> None:
    spec = RAW_TABLES["runs"]
    now = utcnow()
    row = {
        "run_id": run_id,
        "command": "sync",
        "arguments": json.dumps(["(fresh sync of load run " + rc.run_id + ")"]),
        "user_name": os.environ.get("USER") or os.environ.get("LOGNAME"),
        "host_name": socket.gethostname(),
        "tool_version": __version__,
        "config_path": str(rc.settings.source) if rc.settings.source else None,
        "input_files": "[]",
        "rules_sha256": None,
        "started_at": started,
        "finished_at": now,
        "outcome": "success",
        "exit_code": 0,
        "summary": json.dumps({"sessions": sessions, "part_of_run": rc.run_id}),
        "loaded_at": now,
    }
    names = spec.column_names
    con.execute(
        f"insert into raw.runs ({', '.join(names)}) values ({', '.join('?' * len(names))})",
        [row[n] for n in names],
    )


def _note(
    batch: list[dict[str, str]], subjects: set[str], labels: dict[str, tuple[str, str]]
) -> None:
    for r in batch:
        subjects.add(r.get("subject_ID", ""))
        labels[r.get("label", "")] = (r.get("ID", ""), r.get("UID", ""))


def _write(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    names: tuple[str, ...],
    batch: list[dict[str, str]],
    previous: dict[str, tuple[str, int]],
    client: XnatClient,
    pool: ThreadPoolExecutor,
    run_id: str,
    synced_at: Any,
) -> tuple[int, int]:
    need = [
        r["ID"]
        for r in batch
        if r.get("ID") not in previous or previous[r["ID"]][0] != r.get("insert_date", "")
    ]
    counts = dict(zip(need, pool.map(client.scan_count, need), strict=True))
    now = utcnow()
    values = []
    for r in batch:
        sid = r.get("ID", "")
        values.append(
            {
                "run_id": run_id,
                "loaded_at": now,
                "synced_at": synced_at,
                "project": client.project,
                "subject_id": r.get("subject_ID") or None,
                "subject_label": r.get("subject_label") or None,
                "session_id": sid,
                "session_label": r.get("label") or None,
                "xsi_type": r.get("xsiType") or None,
                "modality": r.get("modality") or None,
                "session_date": r.get("date") or None,
                "study_instance_uid": r.get("UID") or None,
                "scan_count": counts.get(sid, previous.get(sid, ("", None))[1]),
                "insert_date": r.get("insert_date") or None,
            }
        )
    con.executemany(sql, [tuple(v[n] for n in names) for v in values])
    return len(need), len(batch) - len(need)
