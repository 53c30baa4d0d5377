"""``pacs2xnat load``: put the manifest's studies into the XNAT project, direct or through DQR.

Order: log in and check the project (XNAT down → exit 3 before anything else), a fresh ``sync``
and the manifest's models built without their tests (SQL leaves out what XNAT holds now), read
the manifest, then load each study (``direct.py`` / ``dqr.py``). Every attempt appends
one ``raw.ingest_attempts`` row as soon as it ends. Idempotent: just before a study is sent,
XNAT is asked once more whether it holds its label (``LoadContext.check_before_upload``), so a
rerun after a crash loads exactly what is missing and never duplicates a session.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from connectors import console
from connectors.clock import utcnow
from connectors.errors import EXIT_SOME_FAILED, ConfigError
from connectors.load.claims import open_claims
from connectors.load.context import LoadContext, Outcome, Study
from connectors.load.display import by_reason, print_plan, print_summary, progress
from connectors.load.kept import discard_unwanted
from connectors.load.manifest_watch import ManifestWatch
from connectors.load.retry_policy import RetryPolicy
from connectors.warehouse.builds import Selection, refresh
from connectors.warehouse.lock import one_loader
from connectors.warehouse.runs import RunContext
from connectors.windows import gate_for
from connectors.xnat.client import XnatClient
from connectors.xnat.sync import sync_sessions

logger = logging.getLogger(__name__)

MANIFEST = "main.ingest_manifest"
CLAIM_RETRY_SECONDS = 1.0
#: The manifest's models without their tests (``pacs2xnat build`` tests them).
MANIFEST_MODELS = Selection(select=("+ingest_manifest",), tests=False)


def run_load(
    rc: RunContext,
    mode: str | None = None,
    limit: int | None = None,
    dry_run: bool = False,
    *,
    sync_first: bool = True,
    build_manifest: bool = True,
    only: set[str] | None = None,
) -> dict[str, Any]:
    """Load the manifest. By default XNAT is synced and the manifest rebuilt first, so it
    leaves out what XNAT holds now; ``sync_first=False, build_manifest=False`` when the caller
    has just done both (``pacs2xnat run``), ``build_manifest=False`` alone reads the mart as it
    is (tests). ``only`` (Study UIDs) keeps just those studies (``pacs2xnat failures --retry``).
    """
    settings = rc.settings
    mode = mode or settings.xnat.mode
    if mode not in ("direct", "dqr"):
        raise ConfigError(f"--mode {mode!r}: must be direct or dqr")
    policy = RetryPolicy.from_project(rc.project_dir)
    since = utcnow()  # what other loaders load from now on is not in this run's manifest
    # One loader at a time on a DuckDB warehouse (its work folder is its own; on PostgreSQL
    # several share the manifest by claims, claims.py); one login for the whole run: sync, the
    # manifest build (dbt never touches XNAT), loading.
    alone = (
        one_loader(settings.warehouse_path, rc.command)
        if rc.warehouse.exclusive
        else contextlib.nullcontext()
    )
    with alone, XnatClient(settings) as client:
        client.check_project()
        summary: dict[str, Any] = {"mode": mode}
        if sync_first:
            summary["sync"] = sync_sessions(rc, client)
        if build_manifest:
            refresh(rc, MANIFEST_MODELS)
        rows = rc.warehouse.read_relation(MANIFEST, "order by study_date, session_label")
        studies = [Study.from_row(r) for r in rows]
        if only is not None:
            studies = [s for s in studies if s.study_instance_uid in only]
        if limit:
            studies = studies[:limit]
        summary |= {"manifest_rows": len(rows), "studies": len(studies)}
        if dry_run:
            if not console.json_mode():  # --json: stdout carries the summary only
                print_plan(studies)
            summary["dry_run"] = True
            summary["would_load"] = sum(1 for s in studies if s.ingest_action == "load")
            return summary
        if mode == "direct":  # paused studies' kept instances the manifest no longer wants
            discard_unwanted(settings.work_dir, {str(r["study_instance_uid"]) for r in rows})
        method = "dqr" if mode == "dqr" else settings.pacs.retrieve
        start = utcnow()
        ctx = LoadContext(rc, client, mode, method, policy)
        ctx.manifest = ManifestWatch(
            rc.warehouse,
            MANIFEST,
            {str(r["study_instance_uid"]) for r in rows},
            settings.load.manifest_refresh_seconds,
        )
        ctx.gate = gate_for(settings.pacs.windows, wait=settings.pacs.wait_for_window)
        ctx.claims = open_claims(settings, rc.run_id, since)
        # Each attempt row is its own short transaction (``LoadContext.record``): between them
        # the warehouse is free for the admin's commands and plain `dbt build`.
        with progress(ctx, len(studies)):
            try:
                _load_shared(ctx, _record_conflicts(ctx, studies))
            finally:
                ctx.claims.close()
    seconds = max((utcnow() - start).total_seconds(), 1e-6)
    summary |= {
        "loaded": ctx.tallies.get("loaded", 0),
        "already_present": ctx.tallies.get("already_present", 0),
        "failed": ctx.tallies.get("failed", 0),
        "failed_by_reason": by_reason(ctx.failures),
        "left_manifest": len(ctx.manifest.dropped),
        "bytes": ctx.bytes_loaded,
        "seconds": round(seconds, 2),
        "mb_per_s": round(ctx.bytes_loaded / seconds / 1e6, 2),
        **ctx.gate.summary(),
        **(ctx.throttle.summary() if mode == "direct" else {}),
    }
    if ctx.not_started:
        summary["not_started"] = ctx.not_started
    if ctx.claims.shared:
        summary["loaded_by_other_loaders"] = len(ctx.done_elsewhere)
    print_summary(summary, ctx.failures)
    if ctx.tallies.get("failed"):
        summary["exit_code"] = EXIT_SOME_FAILED
    return summary


def _load_shared(ctx: LoadContext, studies: list[Study]) -> None:
    """Load in the run's mode; with other loaders on the warehouse, the studies one of them
    held are asked for again until each is loaded by somebody (a dead loader's claims expire)."""
    from connectors.load.direct import load_direct
    from connectors.load.dqr import load_dqr

    pending = studies
    while pending:
        ctx.busy_elsewhere.clear()
        if ctx.mode == "dqr":
            load_dqr(ctx, pending)
        else:
            load_direct(ctx, pending)
        pending = [s for s in pending if s.study_instance_uid in ctx.busy_elsewhere]
        if pending:
            logger.info("%d studies held by other loaders: asking again", len(pending))
            time.sleep(CLAIM_RETRY_SECONDS)


def _record_conflicts(ctx: LoadContext, studies: list[Study]) -> list[Study]:
    """The manifest's 'xnat_conflict' rows get their attempt row without touching PACS or
    XNAT (their label is another study's in XNAT); the others are returned, to load."""
    to_load = []
    for s in studies:
        if s.ingest_action == "xnat_conflict":
            message = (
                f"session {s.session_label} exists in XNAT ({s.xnat_session_id}) "
                "with another Study UID"
            )
            out = Outcome("failed", "xnat_conflict", message, files_expected=s.expected)
            out.xnat_session_id = s.xnat_session_id
            ctx.record(s, utcnow(), out)
        else:
            to_load.append(s)
    return to_load


def retry_failures(rc: RunContext, retryable: set[str], mode: str | None = None) -> dict[str, Any]:
    """Load the failure register's retryable studies again (``pacs2xnat failures --retry``):
    the loader's summary and exit code, plus how many of them the manifest still holds."""
    if not retryable:
        console.say("failure register: nothing to retry")
        return {"retryable": 0, "studies": 0, "loaded": 0, "failed": 0}
    summary = run_load(rc, mode, only=retryable)
    summary["retryable"] = len(retryable)
    summary["not_in_manifest"] = len(retryable) - int(summary.get("studies", 0))
    return summary
