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
from connectors.load.claims import BUSY, MINE
from connectors.load.context import LoadContext, Outcome, Study
from connectors.pacs.retrieve import Retriever
from connectors.xnat.zipstream import ZipProgress, zip_stream

logger = logging.getLogger(__name__)


@dataclass
class _Retrieved:
    study: Study
    started: dt.datetime
    folder: Path | None = None
    files: list[Path] | None = None
    bytes: int = 0
    error: StudyFailed | None = None
    fatal: BaseException | None = None
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
    """Retrieve one study (retrying transient failures); hand it to the uploader."""
    if stop.is_set():
        return
    uid = study.study_instance_uid
    claim = ctx.claims.claim(uid)
    if claim != MINE:  # another loader retrieves it, or has loaded it meanwhile
        (ctx.busy_elsewhere if claim == BUSY else ctx.done_elsewhere).add(uid)
        _put(ready, _Retrieved(study, utcnow(), claimed_elsewhere=True), stop)
        return
    dest = work / uid
    attempt = 0
    while True:
        started = utcnow()
        try:
            # the Retriever checks the count against the PACS's (and the manifest's) number
            with ctx.claims.association():  # one of the team's max_associations
                got = retriever.retrieve(uid, dest, study.expected)
            files = sorted(p for p in Path(got.folder).rglob("*") if p.is_file())
            _put(ready, _Retrieved(study, started, Path(got.folder), files, got.bytes), stop)
            return
        except StudyFailed as e:
            shutil.rmtree(dest, ignore_errors=True)
            if stop.is_set() or not ctx.retry(e, attempt):
                _put(ready, _Retrieved(study, started, error=e), stop)
                return
            ctx.record(study, started, Outcome.failed(e, files_expected=study.expected), False)
            time.sleep(ctx.backoff(attempt))
            attempt += 1
        except Pacs2XnatError as e:  # PACS unreachable: the whole run stops (exit 3)
            shutil.rmtree(dest, ignore_errors=True)
            _put(ready, _Retrieved(study, started, fatal=e), stop)
            return
        except Exception as e:
            shutil.rmtree(dest, ignore_errors=True)
            logger.exception("retrieval of one study failed unexpectedly")
            err = StudyFailed("retrieve_failed", f"{type(e).__name__}: {e}")
            _put(ready, _Retrieved(study, started, error=err), stop)
            return


def _consume(ctx: LoadContext, item: _Retrieved) -> None:
    """Upload and verify one retrieved study, retrying transient XNAT failures."""
    study = item.study
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
                ctx.record(study, started, out)
                return
            except StudyFailed as e:
                final = not ctx.retry(e, attempt)
                out = Outcome.failed(
                    e, files_expected=study.expected, files_received=len(item.files)
                )
                ctx.record(study, started, out, final)
                if final:
                    return
                time.sleep(ctx.backoff(attempt))
                started = utcnow()
                attempt += 1
    finally:
        shutil.rmtree(item.folder, ignore_errors=True)


def _upload_and_verify(ctx: LoadContext, study: Study, files: list[Path], first: bool) -> Outcome:
    client = ctx.client
    n = len(files)
    if first:
        there = ctx.check_before_upload(study)
        if there is not None:
            return there
    else:  # a try of ours that timed out may have been archived after all
        row = client.find_session(study.session_label)
        if row is not None:
            return _verify(ctx, study, row, n, removed_on_mismatch=True)
    client.ensure_subject(study.subject_label)
    progress = ZipProgress()
    try:
        client.upload_zip(zip_stream(files, progress), study.subject_label, study.session_label)
    except StudyFailed:
        _cleanup(ctx, study, n)
        raise
    row = client.find_session(study.session_label)
    if row is None:
        _cleanup(ctx, study, n)
        raise StudyFailed(
            "rejected_by_xnat",
            f"XNAT accepted the upload but has no session {study.session_label} in the project",
        )
    return _verify(ctx, study, row, n, removed_on_mismatch=True)


def _verify(
    ctx: LoadContext, study: Study, row: dict[str, str], n: int, removed_on_mismatch: bool
) -> Outcome:
    sid = row["ID"]
    if row.get("UID") and row["UID"] != study.study_instance_uid:
        raise StudyFailed("xnat_conflict", f"session {study.session_label} holds another study")
    archived = ctx.client.count_files(sid)
    if archived != n:
        if removed_on_mismatch:
            ctx.client.delete_session(sid)
        raise StudyFailed(
            "rejected_by_xnat",
            f"XNAT archived {archived} of {n} files sent; the partial session was removed",
            files_received=n,
        )
    return Outcome(
        "loaded",
        files_expected=study.expected,
        files_received=n,
        files_archived=archived,
        xnat_session_id=sid,
    )


def _cleanup(ctx: LoadContext, study: Study, n: int) -> None:
    """After a failed import nothing half-archived stays: the study's prearchive entries, and a
    session of ours (same label and Study UID) that holds only part of the files."""
    try:
        removed = ctx.client.remove_prearchive(study.study_instance_uid)
        if removed:
            logger.info("removed %d prearchive entries after a failed import", removed)
        row = ctx.client.find_session(study.session_label)
        ours = row is not None and row.get("UID") == study.study_instance_uid
        if ours and row is not None and ctx.client.count_files(row["ID"]) != n:
            ctx.client.delete_session(row["ID"])
    except Pacs2XnatError as e:
        logger.warning("could not clean the prearchive after a failed import: %s", e)
