"""DQR mode: ask XNAT's DICOM Query-Retrieve plugin to pull each study, then follow it.

DQR does not de-duplicate, so XNAT is checked first. Up to ``[xnat] dqr_in_flight`` requests
are followed at once, each by its ``requestId`` through the plugin's queue and history
(the dequeue thread makes a new history row per try, ISSUED before the C-MOVE, FAILED when it
fails; nothing sets RECEIVED: NrgXnat/dicom-query-retrieve PacsDequeueThread). Success is
judged by the archived session: found in the project (by Study UID, then label), with the
expected number of DICOM files, or, with no expected number, a count that stays the same
for ``SETTLE_POLLS`` polls once the plugin's queue row is gone. A request whose retries are
spent (no queue row, every history row FAILED) has failed; one that makes no progress (no
change of rows or file count) for ``dqr_stall_timeout`` seconds fails with ``timeout``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from connectors.clock import utcnow
from connectors.errors import StudyFailed
from connectors.load.claims import BUSY, MINE
from connectors.load.context import LoadContext, Outcome, Study

logger = logging.getLogger(__name__)

SETTLE_POLLS = 3  # an unchanged DICOM count this many polls running, with no queue row: done


@dataclass
class _InFlight:
    study: Study
    request_id: str
    started: Any
    attempt: int
    state: tuple[Any, ...] = ()
    last_change: float = field(default_factory=time.monotonic)
    same: int = 0


def load_dqr(ctx: LoadContext, studies: list[Study]) -> None:
    client = ctx.client
    pacs_id = client.dqr_pacs_id()
    destination = client.dqr_destination()
    limit = max(1, int(ctx.rc.settings.xnat.dqr_in_flight))
    todo = [(s, 0) for s in studies]
    active: list[_InFlight] = []
    while todo or active:
        while todo and len(active) < limit:
            study, attempt = todo.pop(0)
            if attempt == 0:
                if not ctx.still_wanted(study):  # left the manifest since the run began
                    continue
                if not ctx.admit():  # outside the PACS windows with --no-wait: the rest waits
                    continue
                uid = study.study_instance_uid
                claim = ctx.claims.claim(uid)  # several loaders: claims.py
                if claim != MINE:
                    (ctx.busy_elsewhere if claim == BUSY else ctx.done_elsewhere).add(uid)
                    continue
                there = ctx.check_before_upload(study)  # DQR does not de-duplicate
                if there is not None:
                    ctx.record(study, utcnow(), there)
                    continue
            started = utcnow()
            try:
                active.append(_request(ctx, pacs_id, destination, study, started, attempt))
            except StudyFailed as e:
                _failed(ctx, todo, study, started, attempt, e)
        for item in list(active):
            try:
                out = _poll(ctx, item)
            except StudyFailed as e:
                active.remove(item)
                _failed(ctx, todo, item.study, item.started, item.attempt, e)
                continue
            if out is not None:
                active.remove(item)
                ctx.record(item.study, item.started, out)
        if active:
            time.sleep(ctx.rc.settings.xnat.dqr_poll_seconds)


def _failed(
    ctx: LoadContext,
    todo: list[tuple[Study, int]],
    study: Study,
    started: Any,
    attempt: int,
    e: StudyFailed,
) -> None:
    final = not ctx.retry(e, attempt)
    ctx.record(study, started, Outcome.failed(e, files_expected=study.expected), final)
    if not final:
        time.sleep(ctx.backoff(attempt))
        todo.append((study, attempt + 1))


def _request(
    ctx: LoadContext,
    pacs_id: int,
    destination: tuple[str, int],
    study: Study,
    started: Any,
    attempt: int,
) -> _InFlight:
    client = ctx.client
    if not client.dqr_find_study(pacs_id, study.study_instance_uid):
        raise StudyFailed("not_found_on_pacs", "the PACS (through XNAT's DQR) has no such study")
    rows = client.dqr_import(
        pacs_id, destination, study.study_instance_uid, study.subject_label, study.session_label
    )
    if not rows:
        raise StudyFailed("no_images_on_pacs", "DQR queued nothing: no series matched the study")
    request_id = str(rows[0].get("requestId") or rows[0].get("id"))
    return _InFlight(study, request_id, started, attempt)


def _poll(ctx: LoadContext, item: _InFlight) -> Outcome | None:
    """The request's outcome once known, else None (and the stall clock checked)."""
    study, xs = item.study, ctx.rc.settings.xnat
    queue, history = ctx.client.dqr_rows(item.request_id)
    row = ctx.find_study_session(study)
    if row is not None and row.get("UID") not in ("", None, study.study_instance_uid):
        raise StudyFailed("xnat_conflict", f"session {study.session_label} holds another study")
    files = ctx.client.count_files(row["ID"]) if row else 0
    state = (tuple(queue), tuple(history), files)
    item.same = item.same + 1 if state == item.state else 0
    if state != item.state:
        item.state, item.last_change = state, time.monotonic()
    if row is not None:
        settled = not queue and item.same >= SETTLE_POLLS
        if (study.expected is not None and files >= study.expected) or (
            study.expected is None and settled
        ):
            return Outcome(
                "loaded",
                files_expected=study.expected,
                files_received=files,
                files_archived=files,
                xnat_session_id=row["ID"],
            )
        if settled:  # the plugin is done and the count no longer moves: it stays short
            raise StudyFailed(
                "retrieve_incomplete",
                f"DQR request {item.request_id} archived {files} of {study.expected} instances",
                files_expected=study.expected,
                files_received=files,
            )
    if not queue and history and all(s == "FAILED" for s in history):
        raise StudyFailed(
            "retrieve_failed", f"DQR request {item.request_id} FAILED {len(history)} times"
        )
    if time.monotonic() - item.last_change > xs.dqr_stall_timeout:
        status = history[0] if history else (queue[0] if queue else "unknown")
        raise StudyFailed(
            "timeout",
            f"DQR request {item.request_id} made no progress for {xs.dqr_stall_timeout:g} s "
            f"(status {status}, {files} files archived)",
            files_expected=study.expected,
            files_received=files,
        )
    return None
