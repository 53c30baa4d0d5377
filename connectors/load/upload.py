"""Direct mode's XNAT half: upload one retrieved study (a zip streamed while it is built),
judge what XNAT archived, retry transient failures, and delete the study's temporary files.

``direct.py`` runs up to ``[load] uploads_in_flight`` of these at once, each in its own thread
on the run's one XNAT login. Creating a subject is the one call two uploads must not make at
once (``LoadContext.subject_lock``): xnat-web's SubjectResource.handlePut looks the label up and
then saves a new subject without looking again, so two PUTs of one new label make two subjects.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from connectors.clock import utcnow
from connectors.errors import StudyFailed
from connectors.load.context import LoadContext, Outcome, Study
from connectors.xnat.zipstream import ZipProgress, zip_stream

logger = logging.getLogger(__name__)


@dataclass
class Retrieved:
    """What a retrieval worker hands the uploaders: a study's files, or why there are none."""

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


def consume(ctx: LoadContext, item: Retrieved) -> None:
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
                out = upload_and_verify(ctx, study, item.files, first=attempt == 0)
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


def upload_and_verify(ctx: LoadContext, study: Study, files: list[Path], first: bool) -> Outcome:
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
    with ctx.subject_lock:  # never two PUTs of one new label at once (see the module doc)
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
