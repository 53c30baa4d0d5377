"""``pacs2xnat load``: put the manifest's studies into the XNAT project, direct or through DQR.

Order: log in and check the project (XNAT down → exit 3 before anything else), a fresh ``sync``
(so what is already in XNAT is known), ``dbt build +ingest_manifest``, read the manifest, then
load each study (``direct.py`` / ``dqr.py``). Every attempt appends one
``raw.ingest_attempts`` row as soon as it ends. Idempotent: a session whose label is already in
the project is never uploaded again (recorded ``already_present``), so a rerun after a crash
loads exactly what is missing.
"""

from __future__ import annotations

import logging
from typing import Any

from connectors import console
from connectors.clock import utcnow
from connectors.errors import EXIT_SOME_FAILED, ConfigError, StepFailed
from connectors.load.context import LoadContext, Study
from connectors.load.display import by_reason, print_plan, print_summary, progress
from connectors.warehouse.runs import RunContext
from connectors.xnat.client import XnatClient
from connectors.xnat.sync import sync_sessions

logger = logging.getLogger(__name__)

MANIFEST = "main.ingest_manifest"


def run_load(
    rc: RunContext,
    mode: str | None = None,
    limit: int | None = None,
    dry_run: bool = False,
    *,
    build_manifest: bool = True,
    only: set[str] | None = None,
) -> dict[str, Any]:
    """Load the manifest. ``build_manifest=False`` reads the mart as it is (tests, demo);
    ``only`` (Study UIDs) keeps just those of its studies (``pacs2xnat failures --retry``)."""
    settings = rc.settings
    mode = mode or settings.xnat.mode
    if mode not in ("direct", "dqr"):
        raise ConfigError(f"--mode {mode!r}: must be direct or dqr")
    # One login for the whole run: sync, the manifest build (dbt never touches XNAT), loading.
    with XnatClient(settings) as client:
        client.check_project()
        synced = sync_sessions(rc, client, as_own_run=True)
        present: dict[str, tuple[str, str]] = synced.pop("sessions_by_label")
        if build_manifest:
            _build_manifest(rc)
        rows = rc.warehouse.read_relation(MANIFEST, "order by study_date, session_label")
        studies = [Study.from_row(r) for r in rows]
        if only is not None:
            studies = [s for s in studies if s.study_instance_uid in only]
        if limit:
            studies = studies[:limit]
        summary: dict[str, Any] = {
            "mode": mode,
            "manifest_rows": len(rows),
            "studies": len(studies),
            "sync": synced,
        }
        if dry_run:
            if not console.json_mode():  # --json: stdout carries the summary only
                print_plan(studies, present)
            summary["dry_run"] = True
            summary["would_load"] = sum(1 for s in studies if s.session_label not in present)
            return summary
        method = "dqr" if mode == "dqr" else settings.pacs.retrieve
        start = utcnow()
        ctx = LoadContext(rc, client, mode, method, present)
        # Opening DuckDB costs ~50 ms of CPU (the raw DDL runs on every connect): once per run,
        # not once per attempt. Each append still commits at once.
        with rc.warehouse.connect() as con, progress(ctx, len(studies)):
            ctx.con = con
            if mode == "dqr":
                from connectors.load.dqr import load_dqr

                load_dqr(ctx, studies)
            else:
                from connectors.load.direct import load_direct

                load_direct(ctx, studies)
    seconds = max((utcnow() - start).total_seconds(), 1e-6)
    summary |= {
        "loaded": ctx.tallies.get("loaded", 0),
        "already_present": ctx.tallies.get("already_present", 0),
        "failed": ctx.tallies.get("failed", 0),
        "failed_by_reason": by_reason(ctx.failures),
        "bytes": ctx.bytes_loaded,
        "seconds": round(seconds, 2),
        "mb_per_s": round(ctx.bytes_loaded / seconds / 1e6, 2),
    }
    print_summary(summary, ctx.failures)
    if ctx.tallies.get("failed"):
        summary["exit_code"] = EXIT_SOME_FAILED
    return summary


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


def _build_manifest(rc: RunContext) -> None:
    """``dbt build --select +<mart>``; cautious indirect selection, so a singular test that also
    reads a model outside the selection (built or not) is left for the full build."""
    from connectors.warehouse.dbt import run_dbt

    args = ["build", "--select", "+" + MANIFEST.split(".")[-1], "--indirect-selection", "cautious"]
    result = run_dbt(args, project_dir=rc.project_dir, warehouse_path=rc.settings.warehouse_path)
    if not result.success:
        detail = "\n  ".join(result.failures[:20]) or "see target/run_results.json"
        raise StepFailed(f"dbt build of the manifest failed:\n  {detail}")
