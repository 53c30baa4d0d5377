"""The writing half of ``pacs2xnat query``: each patient's outcome as raw rows, committed as
they arrive, with a progress bar.

A patient's ``raw.pacs_studies`` rows are committed in the same transaction as the
``raw.pacs_queries`` row saying its query succeeded (``Warehouse.append_many``), so a run
killed half way never leaves studies without their success record or the reverse.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from connectors import console
from connectors.clock import utcnow
from connectors.errors import PacsUnreachable, QueryFailed
from connectors.pacs.find import FindResult, Window
from connectors.warehouse.journal import append_or_journal

if TYPE_CHECKING:
    from connectors.warehouse.runs import RunContext

logger = logging.getLogger(__name__)

#: Results written per transaction at most (each patient's rows stay together), and how long
#: the writer waits to fill a transaction (a kill loses at most this much work, asked again).
WRITE_BATCH = 200
WRITE_DELAY_SECONDS = 0.25


@dataclass(frozen=True)
class PlannedQuery:
    """One patient to ask: the DICOM window sent, and the window recorded for the plan."""

    mrn: str
    stream: str
    window: Window
    window_from: dt.date | None
    window_to: dt.date | None


@dataclass
class PatientOutcome:
    task: PlannedQuery
    started_at: dt.datetime
    finished_at: dt.datetime
    result: FindResult | None = None
    error: QueryFailed | None = None


class Fatal:
    """A worker could not reach the PACS any more: the run stops (exit 3)."""

    def __init__(self, error: PacsUnreachable) -> None:
        self.error = error


def outcome_rows(
    rc_run_id: str, query_id: str, o: PatientOutcome
) -> dict[str, list[dict[str, Any]]]:
    """The ``raw.pacs_queries`` row and ``raw.pacs_studies`` rows of one patient's outcome."""
    now = utcnow()
    ok = o.result is not None
    studies = o.result.studies if o.result else []
    query = {
        "run_id": rc_run_id,
        "loaded_at": now,
        "query_id": query_id,
        "mrn": o.task.mrn,
        "window_from": o.task.window_from,
        "window_to": o.task.window_to,
        "started_at": o.started_at,
        "finished_at": o.finished_at,
        "outcome": "success" if ok else "failed",
        "studies_found": len(studies),
        "sub_queries": o.result.sub_queries if o.result else 0,
        "status_code": o.result.status_code if o.result else o.error and o.error.status_code,
        "message": None if ok or o.error is None else str(o.error),
    }
    rows = [
        {
            "run_id": rc_run_id,
            "loaded_at": now,
            "query_id": query_id,
            "queried_at": o.finished_at,
            "query_mrn": o.task.mrn,
            "window_from": o.task.window_from,
            "window_to": o.task.window_to,
            **study,
        }
        for study in studies
    ]
    return {"pacs_queries": [query], "pacs_studies": rows}


@dataclass
class Tally:
    queried: int = 0
    failed: int = 0
    studies: int = 0
    sub_queries: int = 0


def progress_bar(total: int) -> Generator[Any, None, None]:
    """A Rich progress bar on stderr (only for a person at a terminal), else a no-op."""
    if not console.progress_enabled():
        while True:
            yield lambda **_: None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    columns = (
        TextColumn("C-FIND"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
    )
    with Progress(*columns, console=console.err, transient=False) as bar:
        tid = bar.add_task("query", total=total, info="")

        def update(**kw: Any) -> None:
            bar.update(tid, **kw)

        while True:
            yield update


def collect(
    rc: RunContext,
    results: queue.SimpleQueue[PatientOutcome | Fatal | None],
    n_workers: int,
    tally: Tally,
    total: int,
    stop: threading.Event,
) -> Fatal | None:
    """Write outcomes as they arrive (each patient's rows in one transaction with its
    success record; the warehouse is opened only for that transaction, free between them);
    returns the fatal error that stopped a worker, if any."""
    running, fatal = n_workers, None
    progress = progress_bar(total)
    update = next(progress)
    while running:
        batch: list[PatientOutcome] = []
        item = results.get()
        deadline = time.monotonic() + WRITE_DELAY_SECONDS
        while True:
            if item is None:
                running -= 1
            elif isinstance(item, Fatal):
                fatal = fatal or item
                stop.set()
            else:
                batch.append(item)
            if len(batch) >= WRITE_BATCH or not running:
                break
            try:  # gather a little more: fewer, larger transactions
                item = results.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
        if not batch:
            continue
        tables: dict[str, list[dict[str, Any]]] = {"pacs_queries": [], "pacs_studies": []}
        for o in batch:
            n = tally.queried + tally.failed
            for table, rows in outcome_rows(rc.run_id, f"{rc.run_id}-q{n:06d}", o).items():
                tables[table].extend(rows)
            if o.result is not None:
                tally.queried += 1
                tally.studies += len(o.result.studies)
                tally.sub_queries += o.result.sub_queries
            else:
                tally.failed += 1
                logger.info("query failed: %s", o.error)
        append_or_journal(rc.warehouse, tables)  # one short transaction, or the journal
        update(
            completed=tally.queried + tally.failed,
            info=f"{tally.studies} studies, {tally.failed} failed",
        )
    progress.close()
    return fatal


__all__ = [
    "WRITE_BATCH",
    "Fatal",
    "PatientOutcome",
    "PlannedQuery",
    "Tally",
    "collect",
    "outcome_rows",
]
