"""Direct mode: retrieve from PACS (``connectors.pacs.retrieve.Retriever``), zip while uploading,
verify what XNAT archived, then record success and delete the temporary files.

Retrieval of the next studies overlaps the upload of the previous one: ``max_associations``
retrieval workers feed a queue of ``queue_size`` retrieved studies; the calling thread uploads
them one by one. A cycle therefore costs about max(retrieve, upload), not their sum, and the
disk holds at most ``max_associations + queue_size + 1`` studies.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
import queue
import re
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors.clock import utcnow
from connectors.errors import Pacs2XnatError, StudyFailed, Unavailable
from connectors.load.claims import BUSY as CLAIMED_ELSEWHERE
from connectors.load.claims import MINE
from connectors.load.context import LoadContext, Outcome, Study
from connectors.load.kept import after_pause, take_kept
from connectors.pacs.retrieve import RetrievalPaused, Retriever
from connectors.pacs.throttle import REFUSALS_PER_STUDY, Ticket, is_refusal
from connectors.xnat.zipstream import ZipProgress, zip_stream

logger = logging.getLogger(__name__)


@dataclass
class _Retrieved:
    study: Study
    started: dt.datetime
    folder: Path | None = None
    files: list[Path] | None = None
    bytes: int = 0
    conversions: tuple[int | None, int | None, int | None] = (None, None, None)
    error: StudyFailed | None = None
    fatal: BaseException | None = None
    skipped: bool = False  # left the manifest before it was started
    left: bool = False  # not started, or paused mid-study (kept.py): outside a window, --no-wait
    claimed_elsewhere: bool = False  # another loader has it (claims.py): nothing to record


def load_direct(ctx: LoadContext, todo: list[Study]) -> None:
    settings = ctx.rc.settings
    if not todo:
        return
    _remove_stale_runs(settings.work_dir)
    work = settings.work_dir / ctx.rc.run_id
    work.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(work, 0o700)
    alive = _hold_run_lock(work)
    ready: queue.Queue[_Retrieved] = queue.Queue(maxsize=settings.load.queue_size)
    stop = threading.Event()
    try:
        with Retriever(settings, shared=ctx.claims.shared) as retriever:
            pool = ThreadPoolExecutor(settings.pacs.max_associations, thread_name_prefix="retrieve")
            try:
                for s in todo:
                    pool.submit(_produce, ctx, retriever, s, work, ready, stop)
                for _ in todo:
                    item = ready.get()
                    if item.left:  # no attempt row: the manifest still holds it
                        continue
                    if item.fatal is not None:
                        _record_fatal(ctx, item.study, item.started, item.fatal, "retrieve_failed")
                        raise item.fatal
                    if item.claimed_elsewhere:
                        continue
                    try:
                        _consume(ctx, item)
                    except Unavailable as e:  # XNAT gone mid-study (down, 401): stop the run
                        _record_fatal(ctx, item.study, item.started, e, "xnat_unavailable")
                        raise
            finally:
                stop.set()
                _drain(ready)
                pool.shutdown(wait=True, cancel_futures=True)
                _drain(ready)
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


def _drain(q: queue.Queue[_Retrieved]) -> None:
    while True:
        try:
            item = q.get_nowait()
        except queue.Empty:
            return
        if item.folder is not None:
            shutil.rmtree(item.folder, ignore_errors=True)


def _put(q: queue.Queue[_Retrieved], item: _Retrieved, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.2)
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
    ready: queue.Queue[_Retrieved],
    stop: threading.Event,
) -> None:
    """Retrieve one study (retrying transient failures); hand it to the uploader. A study
    that left the manifest since the run began is handed over as skipped, never started."""
    if stop.is_set():
        return
    if not ctx.still_wanted(study):
        _put(ready, _Retrieved(study, utcnow(), skipped=True), stop)
        return
    if not ctx.admit():  # outside the PACS windows with --no-wait: leave it for the rerun
        _put(ready, _Retrieved(study, utcnow(), left=True), stop)
        return
    uid = study.study_instance_uid
    claim = ctx.claims.claim(uid)
    if claim != MINE:  # another loader retrieves it, or has loaded it meanwhile
        (ctx.busy_elsewhere if claim == CLAIMED_ELSEWHERE else ctx.done_elsewhere).add(uid)
        _put(ready, _Retrieved(study, utcnow(), claimed_elsewhere=True), stop)
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
            item = _Retrieved(study, started, Path(got.folder), files, got.bytes, conversions)
            _put(ready, item, stop)
            return
        except RetrievalPaused as p:  # a window ended mid-study: what arrived stays in dest
            if after_pause(ctx, uid, dest, p.files):  # the next window opened: only the rest
                continue
            _put(ready, _Retrieved(study, started, left=True), stop)  # kept for the rerun
            return
        except StudyFailed as e:
            shutil.rmtree(dest, ignore_errors=True)
            if _refused(ctx, ticket, e, refusals) and not stop.is_set():
                refusals += 1  # the throttle took an association away or paused: try again
                ctx.record(study, started, Outcome.failed(e, files_expected=study.expected), False)
                continue
            if stop.is_set() or not ctx.retry(e, attempt):
                _put(ready, _Retrieved(study, started, error=e), stop)
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
            _put(ready, _Retrieved(study, started, fatal=e), stop)
            return
        except Exception as e:
            shutil.rmtree(dest, ignore_errors=True)
            logger.exception("retrieval of one study failed unexpectedly")
            err = StudyFailed("retrieve_failed", f"{type(e).__name__}: {e}")
            _put(ready, _Retrieved(study, started, error=err), stop)
            return


def _refused(ctx: LoadContext, ticket: Ticket | None, e: Exception, refusals: int) -> bool:
    """A refusal (0xA700, 0xA702, a rejected association) the adaptive throttle handles:
    it is told, and the study is tried again, up to ``REFUSALS_PER_STUDY`` times."""
    if not (ctx.throttle.pacs.adaptive and is_refusal(str(e))):
        return False
    ctx.throttle.refused(ticket, str(e))
    return refusals < REFUSALS_PER_STUDY


def _consume(ctx: LoadContext, item: _Retrieved) -> None:
    """Upload and verify one retrieved study, retrying transient XNAT failures."""
    study = item.study
    if item.skipped:
        return
    if item.error is not None:
        ctx.record(study, item.started, Outcome.failed(item.error, files_expected=study.expected))
        return
    assert item.files is not None
    assert item.folder is not None
    started = item.started
    attempt = 0
    try:
        while True:
            try:
                out = _upload_and_verify(ctx, study, item.files, first=attempt == 0)
                out.bytes_transferred = item.bytes
                stored, converted, lossy = item.conversions
                out.instances_as_stored, out.instances_converted = stored, converted
                out.instances_lossy_converted = lossy
                ctx.record(study, started, out)
                return
            except StudyFailed as e:
                final = not ctx.retry(e, attempt)
                stored, converted, lossy = item.conversions
                out = Outcome.failed(
                    e,
                    files_expected=study.expected,
                    files_received=len(item.files),
                    instances_as_stored=stored,
                    instances_converted=converted,
                    instances_lossy_converted=lossy,
                )
                ctx.record(study, started, out, final)
                if final:
                    return
                time.sleep(ctx.backoff(attempt))
                started = utcnow()
                attempt += 1
    finally:
        shutil.rmtree(item.folder, ignore_errors=True)


# Prearchive states in which XNAT is still working on what it received (xnat-web
# PrearcUtils.PrearcStatus): a session in one of them is never cleaned up or sent again.
BUSY = (
    "RECEIVING",
    "RECEIVING_INTERRUPT",
    "BUILDING",
    "QUEUED_BUILDING",
    "ARCHIVING",
    "QUEUED_ARCHIVING",
    "MOVING",
    "QUEUED_MOVING",
    "SEPARATING",
    "QUEUED_SEPARATING",
)
LATE = ("timeout", "xnat_unavailable")  # the answer did not come: XNAT may have it anyway


def _upload_and_verify(ctx: LoadContext, study: Study, files: list[Path], first: bool) -> Outcome:
    """Upload once and judge what XNAT archived. Nothing is ever deleted here: a session or
    prearchive row may hold what another upload merged into it, or be archiving still."""
    client = ctx.client
    n = len(files)
    if first:
        there = ctx.check_before_upload(study)
        if there is not None:
            return there
    else:  # a try of ours that timed out may have been archived after all (or be archiving)
        row = _follow(ctx, study, n)
        if row is not None:
            return _verify(ctx, study, row, n)
    client.ensure_subject(study.subject_label)
    progress = ZipProgress()
    try:
        client.upload_zip(zip_stream(files, progress), study.subject_label, study.session_label)
    except StudyFailed as e:
        if e.reason_category not in LATE:
            raise
        row = _follow(ctx, study, n)  # the answer is late, not the archive: follow it there
        if row is None:
            raise
        logger.info("import of %s answered late; XNAT archived it", study.session_label)
        return _verify(ctx, study, row, n)
    row = _follow(ctx, study, n)
    if row is None:
        raise StudyFailed(
            "rejected_by_xnat",
            f"XNAT accepted the upload but has no session {study.session_label} in the project",
        )
    return _verify(ctx, study, row, n)


def _follow(ctx: LoadContext, study: Study, n: int) -> dict[str, str] | None:
    """The study's session once XNAT has it whole or has stopped working on it: a session
    holding the ``n`` DICOM files sent is returned at once; else, while a prearchive row of
    the study is in a busy state, wait (``[xnat] archive_wait``), then look it up."""
    xs = ctx.rc.settings.xnat
    deadline = time.monotonic() + xs.archive_wait
    while True:
        row = ctx.find_study_session(study)
        if row is not None and ctx.client.count_files(row["ID"]) == n:
            return row
        busy = [
            r
            for r in ctx.client.prearchive_rows(study.study_instance_uid)
            if r.get("status") in BUSY
        ]
        if not busy:
            return row
        if time.monotonic() > deadline:
            states = ", ".join(sorted({r.get("status", "") for r in busy}))
            raise StudyFailed(
                "timeout",
                f"XNAT was still working on the study ({states} in the prearchive) after "
                f"{xs.archive_wait:g} s; nothing was removed",
                files_expected=study.expected,
            )
        time.sleep(xs.archive_poll_seconds)


def _verify(ctx: LoadContext, study: Study, row: dict[str, str], n: int) -> Outcome:
    """Loaded when the session's DICOM resource holds the files sent; else a failed attempt
    with both counts (and the session id), and the session left as it is."""
    sid = row["ID"]
    if row.get("UID") and row["UID"] != study.study_instance_uid:
        raise StudyFailed("xnat_conflict", f"session {study.session_label} holds another study")
    archived = ctx.client.count_files(sid)
    if archived != n:
        return Outcome(
            "failed",
            "archive_count_differs",
            f"XNAT's DICOM resource of {sid} holds {archived} files, {n} were sent; "
            "nothing was deleted",
            files_expected=study.expected,
            files_received=n,
            files_archived=archived,
            xnat_session_id=sid,
        )
    return Outcome(
        "loaded",
        files_expected=study.expected,
        files_received=n,
        files_archived=archived,
        xnat_session_id=sid,
    )
