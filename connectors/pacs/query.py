"""``pacs2xnat query``: C-FIND every due patient's studies into ``raw.pacs_studies``.

The plan is decided in SQL (mart ``pacs_query_plan``, a view over the raw rows and
``current_date``, built here first when the project or the vars changed); this module only asks
what it says. ``--since/--until`` replace the
window for the run (and then every active patient is asked), ``--mrn`` limits the patients (an
MRN not on the plan is exit 2).

Gentle and fast: at most ``max_associations`` associations at once, each reused for many
patients, TCP_NODELAY on our sockets; with ``[pacs] query_backend = "dcmtk"`` each worker sends
batches of patients through dcmtk's findscu instead (``find_dcmtk.py``), one association each.
A lost association is reopened and the patient asked
again with exponential backoff, ``retries`` times, then recorded as a failed query. Each
patient's studies are written in the same transaction as the ``raw.pacs_queries`` row saying
its query succeeded, so a run killed half way loses nothing and a rerun asks only for what is
left (the plan's ``is_due``).
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from connectors import console
from connectors.clock import utcnow
from connectors.errors import InputError, PacsUnreachable, QueryFailed
from connectors.pacs.dcmtk_tools import find_tool
from connectors.pacs.dicomweb import DicomwebClient
from connectors.pacs.find import QUERY_CONTEXTS, Window, find_patient
from connectors.pacs.find_dcmtk import BATCH
from connectors.pacs.net import describe, make_ae, open_association
from connectors.pacs.query_findscu import FindscuStream
from connectors.pacs.query_record import (
    Fatal,
    PatientOutcome,
    PlannedQuery,
    Tally,
    collect,
    outcome_rows,
)
from connectors.warehouse.builds import Selection, refresh
from connectors.windows import WindowGate, gate_for

if TYPE_CHECKING:
    from pynetdicom.association import Association

    from connectors.config import Settings
    from connectors.warehouse.runs import RunContext

logger = logging.getLogger(__name__)

PLAN_MART = "main.pacs_query_plan"
PLAN_REQUIRED = "its dbt build did not make it"
#: First wait before asking again after a lost association; doubles each retry.
RETRY_BACKOFF_SECONDS = 0.5


# --------------------------------------------------------------------------- the plan


#: The plan's models, without their tests (``pacs2xnat build`` tests them).
PLAN_MODELS = Selection(select=("+pacs_query_plan",), tests=False)


def read_plan(rc: RunContext) -> tuple[list[dict[str, Any]], bool]:
    """The plan's rows, and whether dbt ran for them. The plan is a view (as are the models
    it reads), so dbt builds it only when the project or the vars (the overlap; today when pinned)
    changed since the last build of it (``builds.refresh``): new raw rows alone need no build. A
    skipped build whose view cannot be read (dropped by hand, the DuckDB file renamed: a view
    names its database) is built again."""
    quiet = not console.verbose()
    built = not refresh(rc, PLAN_MODELS, quiet=quiet).skipped
    try:
        return rc.warehouse.read_relation(PLAN_MART, required=PLAN_REQUIRED), built
    except Exception as e:
        if built:
            raise
        logger.warning("the query plan could not be read (%s): building it again", e)
    refresh(rc, PLAN_MODELS, force=True, quiet=quiet)
    return rc.warehouse.read_relation(PLAN_MART, required=PLAN_REQUIRED), True


def plan_queries(
    plan: Sequence[dict[str, Any]],
    *,
    since: dt.date | None = None,
    until: dt.date | None = None,
    mrns: Sequence[str] = (),
) -> list[PlannedQuery]:
    """The patients to ask and their windows, from the plan rows and the run's overrides.

    Without overrides only ``is_due`` patients are asked, over ``[window_from, ∞)`` (an open
    end, so a study mis-dated in the future is still seen) recorded as covering up to
    ``window_to``. ``since``/``until`` replace either end for every active patient (or the
    ``mrns``); ``mrns`` not on the plan (unknown or withdrawn) are an ``InputError``.
    """
    if since and until and since > until:
        raise InputError(f"--since {since} is after --until {until}", column="--since")
    by_mrn = {str(r["mrn"]): r for r in plan}
    wanted = [m.strip() for m in mrns if m.strip()]
    missing = [m for m in wanted if m not in by_mrn]
    if missing:
        raise InputError(
            f"MRN {', '.join(missing)} not on the query plan: not on the current master list, "
            "or withdrawn (run `pacs2xnat patients import` first if the list changed)",
            column="--mrn",
        )
    override = since is not None or until is not None
    if wanted:
        rows = [by_mrn[m] for m in dict.fromkeys(wanted)]
    elif override:
        rows = list(plan)
    else:
        rows = [r for r in plan if r["is_due"]]
    out = []
    for r in rows:
        plan_from, plan_to = r["window_from"], r["window_to"]
        if override:
            sent = Window(since if since else plan_from, until)
            recorded = (sent.date_from, until if until else plan_to)
        else:
            sent = Window(plan_from, None)
            recorded = (plan_from, plan_to)
        out.append(PlannedQuery(str(r["mrn"]), str(r["stream"]), sent, *recorded))
    return sorted(out, key=lambda q: q.mrn)


# --------------------------------------------------------------------------- workers


class _Asker:
    """One worker's association, reused for many patients and reopened when lost; or, with
    ``[pacs] query_backend = "dcmtk"``, one findscu association per batch of patients."""

    def __init__(self, settings: Settings, assoc: Association | None = None) -> None:
        self.settings = settings
        self.ae = make_ae(settings, QUERY_CONTEXTS)
        self.assoc = assoc
        # [pacs] protocol = "dicomweb": QIDO-RS on one HTTP session instead of an association
        self.web = DicomwebClient(settings.pacs) if settings.pacs.protocol == "dicomweb" else None
        dcmtk = settings.pacs.query_backend == "dcmtk" and self.web is None
        self.findscu = find_tool("findscu", "query_backend") if dcmtk else None

    def batch_size(self, left: int, workers: int) -> int:
        """Patients to take at once: one with pynetdicom; with findscu up to ``BATCH``, fewer
        near the end so that every worker still has a share."""
        if self.findscu is None:
            return 1
        return max(1, min(BATCH, left // max(1, workers)))

    def close(self) -> None:
        if self.web is not None:
            self.web.close()
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.release()
        self.assoc = None

    def _drop(self) -> None:
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.abort()
        self.assoc = None

    def _connection(self) -> Association | DicomwebClient:
        if self.web is not None:
            return self.web
        if self.assoc is None or not self.assoc.is_established:
            self.assoc = open_association(self.settings, self.ae)
        return self.assoc

    def ask_stream(
        self, next_batch: Callable[[], list[PlannedQuery]], pausing: Callable[[], bool]
    ) -> Iterator[PatientOutcome]:
        """Every outcome of the batches ``next_batch`` hands out until it hands out none.

        With findscu the next batch's findscu is started as soon as the previous one has
        ended, and the previous batch is read while it runs (one association at a time, the
        PACS never idle while we decode). When ``pausing()`` (a window's end, a stop) the batch
        in hand is read before another is asked for, so nothing waits unwritten."""
        if self.findscu is None:
            while batch := next_batch():
                for task in batch:
                    yield self.ask(task)
            return
        stream = FindscuStream(self.findscu, self.settings.pacs, self.ask, self.close)
        yield from stream.stream(next_batch, pausing)

    def ask(self, task: PlannedQuery) -> PatientOutcome:
        cfg = self.settings.pacs
        started = utcnow()
        attempt = 0
        while True:
            try:
                result = find_patient(
                    self._connection(), task.mrn, task.window, result_cap=cfg.find_result_cap
                )
                return PatientOutcome(task, started, utcnow(), result=result)
            except QueryFailed as e:
                if e.transient:
                    self._drop()
                if not e.transient or attempt >= cfg.retries:
                    return PatientOutcome(task, started, utcnow(), error=e)
            except PacsUnreachable:
                self._drop()
                if attempt >= cfg.retries:
                    raise
            except Exception as e:  # never lose a patient to an unexpected error: record it
                logger.exception("unexpected error during a C-FIND")
                self._drop()
                error = QueryFailed(f"unexpected error: {type(e).__name__}: {e}")
                return PatientOutcome(task, started, utcnow(), error=error)
            attempt += 1
            time.sleep(RETRY_BACKOFF_SECONDS * 2 ** (attempt - 1))


def _take(tasks: queue.SimpleQueue[PlannedQuery], n: int) -> list[PlannedQuery]:
    batch: list[PlannedQuery] = []
    while len(batch) < n:
        try:
            batch.append(tasks.get_nowait())
        except queue.Empty:
            break
    return batch


def _work(
    asker: _Asker,
    tasks: queue.SimpleQueue[PlannedQuery],
    results: queue.SimpleQueue[PatientOutcome | Fatal | None],
    stop: threading.Event,
    gate: WindowGate,
    workers: int = 1,
) -> None:
    def next_batch() -> list[PlannedQuery]:
        # outside the PACS windows with --no-wait, or stopped: none, the rest stays due
        if stop.is_set() or not gate.admit():
            return []
        return _take(tasks, asker.batch_size(tasks.qsize(), workers))

    try:
        for outcome in asker.ask_stream(next_batch, lambda: stop.is_set() or gate.closed_now()):
            results.put(outcome)
    except PacsUnreachable as e:
        results.put(Fatal(e))
    finally:
        asker.close()
        results.put(None)  # this worker is done


# --------------------------------------------------------------------------- the command


def run_query(
    rc: RunContext,
    since: dt.date | None = None,
    until: dt.date | None = None,
    mrns: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Build and read the plan, ask the PACS, record every patient's outcome; the summary.
    Only inside the ``[pacs] windows``: it waits for one, or (``--no-wait``) stops and says
    ``paused_until``; the patients not asked stay due for the rerun."""
    if since and until and since > until:  # bad input: say so before touching PACS or dbt
        raise InputError(f"--since {since} is after --until {until}", column="--since")
    settings = rc.settings
    gate = gate_for(settings.pacs.windows, wait=settings.pacs.wait_for_window)
    if not gate.admit():
        return {"patients_queried": 0, "patients_failed": 0, "studies_found": 0,
                **gate.summary()}  # fmt: skip
    # Fail fast (exit 3) when the PACS is down or refuses us, before the dbt build.
    if settings.pacs.protocol == "dicomweb":
        web = DicomwebClient(settings.pacs)
        try:
            web.check()
        finally:
            web.close()
    else:
        open_association(settings, make_ae(settings, QUERY_CONTEXTS)).release()
    started = time.monotonic()
    plan, plan_built = read_plan(rc)
    plan_seconds = round(time.monotonic() - started, 3)  # dbt's share (benchmarks/cycle)
    tasks = plan_queries(plan, since=since, until=until, mrns=mrns or ())
    summary: dict[str, Any] = {
        "plan_seconds": plan_seconds,
        "plan_built": plan_built,
        "patients_on_plan": len(plan),
        "patients_due": len(tasks),
        "window_override": {"since": since, "until": until} if (since or until) else None,
    }
    if not plan:
        console.say("No active patients on the query plan: import the master list first.")
    if not tasks:
        console.say("Nothing to ask: every active patient is queried up to today.")
        return {**summary, "patients_queried": 0, "patients_failed": 0, "studies_found": 0}
    try:
        summary.update(ask_patients(rc, tasks, gate))
    except PacsUnreachable:
        rc.summary.update(summary)
        raise
    console.say(
        f"Queried {summary['patients_queried']} patients: {summary['studies_found']} studies "
        f"found, {summary['patients_failed']} failed, {summary['sub_queries']} C-FIND requests."
    )
    if summary["patients_failed"]:
        summary["exit_code"] = 1
    return summary


def ask_patients(
    rc: RunContext, tasks: Sequence[PlannedQuery], gate: WindowGate | None = None
) -> dict[str, Any]:
    """Ask the PACS for every task on at most ``max_associations`` reused associations and
    record each outcome as it arrives; the counts. ``PacsUnreachable`` if the PACS goes away
    for good (what was committed stays)."""
    settings = rc.settings
    gate = gate or gate_for(settings.pacs.windows, wait=settings.pacs.wait_for_window)
    n_workers = max(1, min(settings.pacs.max_associations, len(tasks)))
    logger.info(
        "querying %d patients on %s with %d associations",
        len(tasks),
        describe(settings),
        n_workers,
    )
    todo: queue.SimpleQueue[PlannedQuery] = queue.SimpleQueue()
    for t in tasks:
        todo.put(t)
    results: queue.SimpleQueue[PatientOutcome | Fatal | None] = queue.SimpleQueue()
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=_work,
            args=(_Asker(settings), todo, results, stop, gate, n_workers),
            daemon=True,
            name=f"cfind-{i}",
        )
        for i in range(n_workers)
    ]
    for th in threads:
        th.start()
    tally, fatal = Tally(), None
    try:
        fatal = collect(rc, results, len(threads), tally, len(tasks), stop)
    finally:
        stop.set()
        for th in threads:
            th.join()
    counts = {
        "patients_queried": tally.queried,
        "patients_failed": tally.failed,
        "studies_found": tally.studies,
        "sub_queries": tally.sub_queries,
        "max_associations": n_workers,
        **gate.summary(),
    }
    if fatal is not None:
        rc.summary.update(counts)
        raise fatal.error
    return counts


__all__ = [
    "PlannedQuery",
    "ask_patients",
    "outcome_rows",
    "plan_queries",
    "read_plan",
    "run_query",
]
