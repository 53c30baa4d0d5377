"""Direct mode: retrieve from PACS (``connectors.pacs.retrieve.Retriever``), zip while uploading,
verify what XNAT archived, then record success and delete the temporary files (``upload.py``).

Retrieval of the next studies overlaps the upload of the previous ones: ``max_associations``
retrieval workers feed a queue of ``queue_size`` retrieved studies; up to ``uploads_in_flight``
upload threads take them from it. A cycle therefore costs about max(retrieve, upload), not
their sum, and the disk holds at most ``max_associations + queue_size + uploads_in_flight``
studies.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import re
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from connectors.clock import utcnow
from connectors.errors import Pacs2XnatError, StudyFailed, Unavailable
from connectors.load.claims import BUSY as CLAIMED_ELSEWHERE
from connectors.load.claims import MINE
from connectors.load.context import LoadContext, Outcome, Study
from connectors.load.kept import after_pause, take_kept
from connectors.load.upload import Retrieved, consume
from connectors.pacs.retrieve import RetrievalPaused, Retriever
from connectors.pacs.throttle import REFUSALS_PER_STUDY, Ticket, is_refusal

logger = logging.getLogger(__name__)


def load_direct(ctx: LoadContext, todo: list[Study]) -> None:
    settings = ctx.rc.settings
    if not todo:
        return
    _remove_stale_runs(settings.work_dir)
    work = settings.work_dir / ctx.rc.run_id
    work.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(work, 0o700)
    alive = _hold_run_lock(work)
    ready: queue.Queue[Retrieved] = queue.Queue(maxsize=settings.load.queue_size)
    stop = threading.Event()
    uploads = _Uploads(ctx, settings.load.uploads_in_flight, stop)
    try:
        with Retriever(settings, shared=ctx.claims.shared) as retriever:
            pool = ThreadPoolExecutor(settings.pacs.max_associations, thread_name_prefix="retrieve")
            try:
                for s in todo:
                    pool.submit(_produce, ctx, retriever, s, work, ready, stop)
                for _ in todo:
                    item = _next(ready, uploads)
                    if item.left:  # no attempt row: the manifest still holds it
                        continue
                    if item.fatal is not None:
                        _record_fatal(ctx, item.study, item.started, item.fatal, "retrieve_failed")
                        raise item.fatal
                    if item.claimed_elsewhere:
                        continue
                    uploads.start(item)
                uploads.wait()
            finally:
                stop.set()
                _drain(ready)
                pool.shutdown(wait=True, cancel_futures=True)
                _drain(ready)
                uploads.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)  # nothing retrieved outlives the run
        os.close(alive)
        Path(f"{work}.lock").unlink(missing_ok=True)


def _record_fatal(
    ctx: LoadContext, study: Study, started: Any, error: BaseException, reason: str
) -> None:
    """The study in hand when the run has to stop still gets its attempt row: none is lost."""
    if study.study_instance_uid in ctx.finished:
        return
    failed = StudyFailed(reason, f"the run stopped: {error}")
    ctx.record(study, started, Outcome.failed(failed, files_expected=study.expected))


class _Uploads:
    """Up to ``n`` studies uploading at once (``upload.consume``), each in a thread of its own;
    the first error that has to stop the run (XNAT gone: exit 3) is raised in the caller's
    thread, after which no new upload starts."""

    def __init__(self, ctx: LoadContext, n: int, stop: threading.Event) -> None:
        self.ctx, self.stop = ctx, stop
        self.pool = ThreadPoolExecutor(n, thread_name_prefix="upload")
        self.free = threading.Semaphore(n)
        self.failed: BaseException | None = None

    def check(self) -> None:
        if self.failed is not None:
            raise self.failed

    def start(self, item: Retrieved) -> None:
        """Hand ``item`` to an upload thread once one is free."""
        while not self.free.acquire(timeout=POLL):
            self.check()
        try:
            self.check()
        except BaseException:
            self.free.release()
            if item.folder is not None:
                shutil.rmtree(item.folder, ignore_errors=True)
            raise
        self.pool.submit(self._run, item)

    def _run(self, item: Retrieved) -> None:
        try:
            try:
                consume(self.ctx, item)
            except Unavailable as e:  # XNAT gone mid-study (down, 401): stop the run
                _record_fatal(self.ctx, item.study, item.started, e, "xnat_unavailable")
                raise
        except BaseException as e:
            if self.failed is None:
                self.failed = e
            self.stop.set()
        finally:
            self.free.release()

    def wait(self) -> None:
        """Every upload started has ended; raise the first that stopped the run."""
        self.pool.shutdown(wait=True)
        self.check()

    def close(self) -> None:
        """Let the uploads in flight end (each records its attempt); start no other."""
        self.pool.shutdown(wait=True, cancel_futures=True)


POLL = 0.2  # seconds between looks at whether the run has stopped (queue waits, free uploads)


def _next(ready: queue.Queue[Retrieved], uploads: _Uploads) -> Retrieved:
    """The next retrieved study; an upload that stopped the run is raised instead."""
    while True:
        uploads.check()
        try:
            return ready.get(timeout=POLL)
        except queue.Empty:
            continue


RUN_FOLDER = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")


def _hold_run_lock(work: Path) -> int:
    """An exclusive ``flock`` on ``<run folder>.lock`` for the load's life: the kernel drops it
    when the loader dies, so another loader (PostgreSQL lets several run) knows the folder is
    stale only then."""
    fd = os.open(f"{work}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _loader_alive(folder: Path) -> bool:
    lock = Path(f"{folder}.lock")
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    lock.unlink(missing_ok=True)
    return False


def _remove_stale_runs(work_dir: Path) -> None:
    """Folders of runs that were killed (SIGKILL, power cut): their loader no longer holds
    the folder's ``flock``, so nobody writes there. Only run-id-named folders."""
    if not work_dir.is_dir():
        return
    for child in work_dir.iterdir():
        if child.is_dir() and RUN_FOLDER.match(child.name) and not _loader_alive(child):
            logger.info("removing a killed run's retrieved files: %s", child)
            shutil.rmtree(child, ignore_errors=True)


def _drain(q: queue.Queue[Retrieved]) -> None:
    while True:
        try:
            item = q.get_nowait()
        except queue.Empty:
            return
        if item.folder is not None:
            shutil.rmtree(item.folder, ignore_errors=True)


def _put(q: queue.Queue[Retrieved], item: Retrieved, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            q.put(item, timeout=POLL)
            return
        except queue.Full:
            continue
    if item.folder is not None:
        shutil.rmtree(item.folder, ignore_errors=True)


def _produce(
    ctx: LoadContext,
    retriever: Any,
    study: Study,
    work: Path,
    ready: queue.Queue[Retrieved],
    stop: threading.Event,
) -> None:
    """Retrieve one study (retrying transient failures); hand it to the uploader. A study
    that left the manifest since the run began is handed over as skipped, never started."""
    if stop.is_set():
        return
    if not ctx.still_wanted(study):
        _put(ready, Retrieved(study, utcnow(), skipped=True), stop)
        return
    if not ctx.admit():  # outside the PACS windows with --no-wait: leave it for the rerun
        _put(ready, Retrieved(study, utcnow(), left=True), stop)
        return
    uid = study.study_instance_uid
    claim = ctx.claims.claim(uid)
    if claim != MINE:  # another loader retrieves it, or has loaded it meanwhile
        (ctx.busy_elsewhere if claim == CLAIMED_ELSEWHERE else ctx.done_elsewhere).add(uid)
        _put(ready, Retrieved(study, utcnow(), claimed_elsewhere=True), stop)
        return
    dest = work / uid
    take_kept(ctx.rc.settings.work_dir, uid, dest)  # a folder a paused earlier run left
    window_ended = None if ctx.gate.windows.always_open else ctx.gate.closed_now
    attempt = refusals = 0
    throttle = ctx.throttle
    while True:
        started = utcnow()
        ticket = None
        try:
            # [pacs] caps and the adaptive back-off; one of the team's max_associations
            with throttle.slot() as ticket, ctx.claims.association():
                # the Retriever checks the count against the PACS's (and the manifest's) number
                got = retriever.retrieve(uid, dest, study.expected, stop=window_ended)
            throttle.answered(ticket, got.seconds, got.files, got.bytes)
            files = sorted(p for p in Path(got.folder).rglob("*") if p.is_file())
            conversions = (got.as_stored, got.converted, got.lossy_converted)
            item = Retrieved(study, started, Path(got.folder), files, got.bytes, conversions)
            _put(ready, item, stop)
            return
        except RetrievalPaused as p:  # a window ended mid-study: what arrived stays in dest
            if after_pause(ctx, uid, dest, p.files):  # the next window opened: only the rest
                continue
            _put(ready, Retrieved(study, started, left=True), stop)  # kept for the rerun
            return
        except StudyFailed as e:
            shutil.rmtree(dest, ignore_errors=True)
            if _refused(ctx, ticket, e, refusals) and not stop.is_set():
                refusals += 1  # the throttle took an association away or paused: try again
                ctx.record(study, started, Outcome.failed(e, files_expected=study.expected), False)
                continue
            if stop.is_set() or not ctx.retry(e, attempt):
                _put(ready, Retrieved(study, started, error=e), stop)
                return
            ctx.record(study, started, Outcome.failed(e, files_expected=study.expected), False)
            time.sleep(ctx.backoff(attempt))
            attempt += 1
        except Pacs2XnatError as e:  # PACS unreachable: the whole run stops (exit 3)
            shutil.rmtree(dest, ignore_errors=True)
            # a PACS that served us and now rejects associations is busy: back off instead
            if throttle.answered_ok and _refused(ctx, ticket, e, refusals) and not stop.is_set():
                refusals += 1
                continue
            _put(ready, Retrieved(study, started, fatal=e), stop)
            return
        except Exception as e:
            shutil.rmtree(dest, ignore_errors=True)
            logger.exception("retrieval of one study failed unexpectedly")
            err = StudyFailed("retrieve_failed", f"{type(e).__name__}: {e}")
            _put(ready, Retrieved(study, started, error=err), stop)
            return


def _refused(ctx: LoadContext, ticket: Ticket | None, e: Exception, refusals: int) -> bool:
    """A refusal (0xA700, 0xA702, a rejected association) the adaptive throttle handles:
    it is told, and the study is tried again, up to ``REFUSALS_PER_STUDY`` times."""
    if not (ctx.throttle.pacs.adaptive and is_refusal(str(e))):
        return False
    ctx.throttle.refused(ticket, str(e))
    return refusals < REFUSALS_PER_STUDY
