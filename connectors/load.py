"""``pacs2xnat load``: put the manifest's studies into the XNAT project, direct or through DQR.

Order: log in and check the project (XNAT down → exit 3 before anything else), a fresh ``sync``
(so what is already in XNAT is known), ``dbt build +ingest_manifest``, read the manifest, then
load each study (``load_direct.py`` / ``load_dqr.py``). Every attempt appends one
``raw.ingest_attempts`` row as soon as it ends. Idempotent: a session whose label is already in
the project is never uploaded again (recorded ``already_present``), so a rerun after a crash
loads exactly what is missing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from connectors import console
from connectors.errors import (
    EXIT_SOME_FAILED,
    ConfigError,
    StepFailed,
    StudyFailed,
    XnatUnreachable,
)
from connectors.runs import RunContext
from connectors.sync import sync_sessions
from connectors.warehouse import utcnow
from connectors.xnat import XnatClient

logger = logging.getLogger(__name__)

MANIFEST = "main.ingest_manifest"
UNAVAILABLE_LIMIT = 3  # studies in a row failed as xnat_unavailable: XNAT is down, stop (exit 3)


@dataclass(frozen=True)
class Study:
    """One row of the ``ingest_manifest`` mart."""

    study_instance_uid: str
    accession_number: str | None
    nhs_number: str | None
    subject_label: str
    session_label: str
    study_date: Any = None
    modalities: str | None = None
    expected: int | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Study:
        n: Any = row.get("number_of_study_related_instances")
        return cls(
            study_instance_uid=str(row["study_instance_uid"]),
            accession_number=row.get("accession_number"),
            nhs_number=row.get("nhs_number"),
            subject_label=str(row["subject_label"]),
            session_label=str(row["session_label"]),
            study_date=row.get("study_date"),
            modalities=row.get("modalities_in_study"),
            expected=int(n) if n not in (None, "") else None,
        )


@dataclass
class Outcome:
    """What one attempt ended with; becomes a ``raw.ingest_attempts`` row."""

    outcome: str  # loaded | already_present | failed
    reason_category: str | None = None
    message: str | None = None
    files_expected: int | None = None
    files_received: int | None = None
    files_archived: int | None = None
    bytes_transferred: int | None = None
    xnat_session_id: str | None = None

    @classmethod
    def failed(cls, e: StudyFailed, **counts: Any) -> Outcome:
        return cls(
            "failed",
            e.reason_category,
            str(e),
            files_expected=counts.pop("files_expected", e.files_expected),
            files_received=counts.pop("files_received", e.files_received),
            **counts,
        )


@dataclass
class LoadContext:
    """What the mode runners share: the run, the client, the recorder and the tallies."""

    rc: RunContext
    client: XnatClient
    mode: str
    method: str
    present: dict[str, tuple[str, str]]
    tallies: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[Study, Outcome]] = field(default_factory=list)
    bytes_loaded: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    on_done: Callable[[Study, Outcome, bool], None] | None = None
    con: Any = None  # one warehouse connection for the loading phase (no dbt runs meanwhile)
    unavailable_in_a_row: int = 0
    finished: set[str] = field(default_factory=set)  # Study UIDs with their final attempt row

    def record(self, study: Study, started: dt.datetime, out: Outcome, final: bool = True) -> None:
        """Append the attempt's row now (so a crash loses nothing that happened)."""
        row = {
            "run_id": self.rc.run_id,
            "loaded_at": utcnow(),
            "attempt_id": str(uuid.uuid4()),
            "study_instance_uid": study.study_instance_uid,
            "accession_number": study.accession_number,
            "nhs_number": study.nhs_number,
            "subject_label": study.subject_label,
            "session_label": study.session_label,
            "mode": self.mode,
            "retrieve_method": self.method,
            "started_at": started,
            "finished_at": utcnow(),
            "outcome": out.outcome,
            "reason_category": out.reason_category,
            "message": out.message,
            "files_expected": out.files_expected,
            "files_received": out.files_received,
            "files_archived": out.files_archived,
            "bytes_transferred": out.bytes_transferred,
            "xnat_session_id": out.xnat_session_id,
        }
        with self._lock:  # serialises the shared connection too
            self.rc.warehouse.append("ingest_attempts", [row], con=self.con)
            if final:
                self.finished.add(study.study_instance_uid)
                down = out.reason_category == "xnat_unavailable"
                self.unavailable_in_a_row = self.unavailable_in_a_row + 1 if down else 0
                self.tallies[out.outcome] = self.tallies.get(out.outcome, 0) + 1
                if out.outcome == "failed":
                    self.failures.append((study, out))
                if out.outcome == "loaded":
                    self.bytes_loaded += out.bytes_transferred or 0
        if self.on_done is not None:
            self.on_done(study, out, final)
        if self.unavailable_in_a_row >= UNAVAILABLE_LIMIT:
            raise XnatUnreachable(
                f"XNAT failed {UNAVAILABLE_LIMIT} studies in a row after retries "
                f"({out.message}); stopping: rerun load when XNAT is back"
            )

    def already_there(self, study: Study, ask_xnat: bool = False) -> Outcome | None:
        """An outcome without loading when XNAT already has this label (our study or not):
        from the run's fresh sync, and with ``ask_xnat`` also from XNAT right now."""
        found = self.present.get(study.session_label)
        if found is None and ask_xnat:
            row = self.client.find_session(study.session_label)
            found = (row["ID"], row.get("UID", "")) if row else None
        if found is None:
            return None
        sid, uid = found
        if uid and uid != study.study_instance_uid:
            return Outcome(
                "failed",
                "xnat_conflict",
                f"session {study.session_label} exists in XNAT ({sid}) with another Study UID",
                files_expected=study.expected,
                xnat_session_id=sid,
            )
        return Outcome("already_present", xnat_session_id=sid, files_expected=study.expected)


def run_load(
    rc: RunContext,
    mode: str | None = None,
    limit: int | None = None,
    dry_run: bool = False,
    *,
    build_manifest: bool = True,
    retriever_factory: Callable[[Any], Any] | None = None,
    relation: str = MANIFEST,
    only: set[str] | None = None,
) -> dict[str, Any]:
    """Load the manifest. ``build_manifest=False`` reads the mart as it is (tests, demo);
    ``retriever_factory(settings)`` replaces ``connectors.retrieve.Retriever``; ``relation``
    is another mart with the manifest's columns (``failures --retry``), built by dbt too;
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
            _build_manifest(rc, relation)
        rows = rc.warehouse.read_relation(relation, "order by study_date, session_label")
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
                _print_plan(studies, present)
            summary["dry_run"] = True
            summary["would_load"] = sum(1 for s in studies if s.session_label not in present)
            return summary
        method = "dqr" if mode == "dqr" else settings.pacs.retrieve
        start = utcnow()
        ctx = LoadContext(rc, client, mode, method, present)
        # Opening DuckDB costs ~50 ms of CPU (the raw DDL runs on every connect): once per run,
        # not once per attempt. Each append still commits at once.
        with rc.warehouse.connect() as con, _progress(ctx, len(studies)):
            ctx.con = con
            if mode == "dqr":
                from connectors.load_dqr import load_dqr

                load_dqr(ctx, studies)
            else:
                from connectors.load_direct import load_direct

                load_direct(ctx, studies, retriever_factory)
    seconds = max((utcnow() - start).total_seconds(), 1e-6)
    summary |= {
        "loaded": ctx.tallies.get("loaded", 0),
        "already_present": ctx.tallies.get("already_present", 0),
        "failed": ctx.tallies.get("failed", 0),
        "failed_by_reason": _by_reason(ctx.failures),
        "bytes": ctx.bytes_loaded,
        "seconds": round(seconds, 2),
        "mb_per_s": round(ctx.bytes_loaded / seconds / 1e6, 2),
    }
    _print_summary(summary, ctx.failures)
    if ctx.tallies.get("failed"):
        summary["exit_code"] = EXIT_SOME_FAILED
    return summary


def _build_manifest(rc: RunContext, relation: str) -> None:
    """``dbt build --select +<mart>``; cautious indirect selection, so a singular test that also
    reads a model outside the selection (built or not) is left for the full build."""
    from connectors.dbt import run_dbt

    args = ["build", "--select", "+" + relation.split(".")[-1], "--indirect-selection", "cautious"]
    result = run_dbt(args, project_dir=rc.project_dir, warehouse_path=rc.settings.warehouse_path)
    if not result.success:
        detail = "\n  ".join(result.failures[:20]) or "see target/run_results.json"
        raise StepFailed(f"dbt build of the manifest failed:\n  {detail}")


@contextlib.contextmanager
def _progress(ctx: LoadContext, total: int) -> Iterator[None]:
    """Studies done/total, MB/s and an ETA on stderr, for a person at a terminal only."""
    if not console.progress_enabled() or total == 0:
        yield
        return
    started = time.monotonic()
    columns = (
        TextColumn("load"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console.err, transient=False) as bar:
        task = bar.add_task("load", total=total, rate="")

        def done(study: Study, out: Outcome, final: bool) -> None:
            if final:
                mbs = ctx.bytes_loaded / max(time.monotonic() - started, 1e-6) / 1e6
                bar.update(task, advance=1, rate=f"{mbs:.1f} MB/s")

        ctx.on_done = done
        yield


def _print_plan(studies: list[Study], present: dict[str, tuple[str, str]]) -> None:
    table = Table(title="pacs2xnat load --dry-run: what would be loaded")
    for col in ("study date", "subject", "session", "modalities", "instances", "action"):
        table.add_column(col)
    for s in studies:
        action = "skip (in XNAT)" if s.session_label in present else "load"
        table.add_row(
            str(s.study_date or ""),
            s.subject_label,
            s.session_label,
            s.modalities or "",
            "" if s.expected is None else str(s.expected),
            action,
        )
    console.out.print(table)


def _by_reason(failures: list[tuple[Study, Outcome]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, outcome in failures:
        key = outcome.reason_category or "other"
        counts[key] = counts.get(key, 0) + 1
    return counts


def _print_summary(summary: dict[str, Any], failures: list[tuple[Study, Outcome]]) -> None:
    if console.json_mode():
        return
    table = Table(title=f"pacs2xnat load ({summary['mode']})")
    table.add_column("outcome")
    table.add_column("studies", justify="right")
    for key in ("loaded", "already_present", "failed"):
        table.add_row(key, str(summary[key]))
    table.add_row("MB loaded", f"{summary['bytes'] / 1e6:.1f}")
    table.add_row("MB/s", f"{summary['mb_per_s']:.1f}")
    console.show(table)
    if failures:
        ft = Table(title="failed studies (see pacs2xnat failures)")
        for col in ("session", "reason", "message"):
            ft.add_column(col)
        for s, o in failures[:50]:
            ft.add_row(s.session_label, o.reason_category or "", (o.message or "")[:120])
        console.show(ft)
