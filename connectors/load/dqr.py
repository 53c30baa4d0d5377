"""DQR mode: ask XNAT's DICOM Query-Retrieve plugin to pull each study, then follow it.

DQR does not de-duplicate, so XNAT is checked first. A request is followed through the queue
and history (QUEUED, PROCESSING, ISSUED, RECEIVED, FAILED) and the project's sessions; success
is the session found in the project with the expected number of files. A request that makes no
progress (no change of status or file count) for ``dqr_stall_timeout`` seconds has failed with
``timeout`` instead of being "processing" forever.
"""

from __future__ import annotations

import logging
import time

from connectors.clock import utcnow
from connectors.errors import StudyFailed
from connectors.load.claims import BUSY, MINE
from connectors.load.context import LoadContext, Outcome, Study

logger = logging.getLogger(__name__)


def load_dqr(ctx: LoadContext, studies: list[Study]) -> None:
    pacs_id = ctx.client.dqr_pacs_id()
    for study in studies:
        claim = ctx.claims.claim(study.study_instance_uid)  # several loaders: claims.py
        if claim != MINE:
            (ctx.busy_elsewhere if claim == BUSY else ctx.done_elsewhere).add(
                study.study_instance_uid
            )
            continue
        there = ctx.check_before_upload(study)  # DQR does not de-duplicate
        if there is not None:
            ctx.record(study, utcnow(), there)
            continue
        attempt = 0
        while True:
            started = utcnow()
            try:
                out = _one(ctx, pacs_id, study)
                ctx.record(study, started, out)
                break
            except StudyFailed as e:
                final = not ctx.retry(e, attempt)
                ctx.record(study, started, Outcome.failed(e, files_expected=study.expected), final)
                if final:
                    break
                time.sleep(ctx.backoff(attempt))
                attempt += 1


def _one(ctx: LoadContext, pacs_id: int, study: Study) -> Outcome:
    client = ctx.client
    xs = ctx.rc.settings.xnat
    if not client.dqr_find_study(pacs_id, study.study_instance_uid):
        raise StudyFailed("not_found_on_pacs", "the PACS (through XNAT's DQR) has no such study")
    ids = client.dqr_import(
        pacs_id, study.study_instance_uid, study.subject_label, study.session_label
    )
    if not ids:
        raise StudyFailed("no_images_on_pacs", "DQR queued nothing: no series matched the study")
    request_id = ids[0]
    last_state: tuple[str, int] = ("", -1)
    last_change = time.monotonic()
    while True:
        status = client.dqr_status(request_id)
        if status == "FAILED":
            raise StudyFailed("retrieve_failed", f"DQR request {request_id} FAILED")
        row = client.find_session(study.session_label)
        files = client.count_files(row["ID"]) if row else 0
        if row is not None and row.get("UID") not in ("", None, study.study_instance_uid):
            raise StudyFailed("xnat_conflict", f"session {study.session_label} holds another study")
        complete = study.expected is None or files >= study.expected
        if row is not None and complete and (study.expected is not None or status == "RECEIVED"):
            return Outcome(
                "loaded",
                files_expected=study.expected,
                files_received=files,
                files_archived=files,
                xnat_session_id=row["ID"],
            )
        if (
            status == "RECEIVED"
            and row is not None
            and not complete
            and last_state == (status, files)
        ):
            raise StudyFailed(
                "retrieve_incomplete",
                f"DQR archived {files} of {study.expected} instances",
                files_expected=study.expected,
                files_received=files,
            )
        if (status, files) != last_state:
            last_state, last_change = (status, files), time.monotonic()
        elif time.monotonic() - last_change > xs.dqr_stall_timeout:
            raise StudyFailed(
                "timeout",
                f"DQR request {request_id} made no progress for {xs.dqr_stall_timeout:g} s "
                f"(status {status or 'unknown'}, {files} files archived)",
                files_expected=study.expected,
                files_received=files,
            )
        time.sleep(xs.dqr_poll_seconds)
