"""What a person sees of a load: the progress bar, the dry-run plan, the summary tables."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
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
from connectors.load.context import LoadContext, Outcome, Study


@contextlib.contextmanager
def progress(ctx: LoadContext, total: int) -> Iterator[None]:
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

        def paused(until: Any) -> None:
            bar.update(task, rate=f"paused until {until:%a %d %b %H:%M}")

        ctx.on_done = done
        ctx.gate.on_pause = paused
        yield


def print_plan(studies: list[Study]) -> None:
    table = Table(title="pacs2xnat load --dry-run: what would be loaded")
    for col in ("study date", "subject", "session", "modalities", "instances", "action"):
        table.add_column(col)
    for s in studies:
        action = "load" if s.ingest_action == "load" else "record conflict (label in XNAT)"
        table.add_row(
            str(s.study_date or ""),
            s.subject_label,
            s.session_label,
            s.modalities or "",
            "" if s.expected is None else str(s.expected),
            action,
        )
    console.out.print(table)


def by_reason(failures: list[tuple[Study, Outcome]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, outcome in failures:
        key = outcome.reason_category or "other"
        counts[key] = counts.get(key, 0) + 1
    return counts


def print_summary(summary: dict[str, Any], failures: list[tuple[Study, Outcome]]) -> None:
    if console.json_mode():
        return
    table = Table(title=f"pacs2xnat load ({summary['mode']})")
    table.add_column("outcome")
    table.add_column("studies", justify="right")
    for key in ("loaded", "already_present", "failed"):
        table.add_row(key, str(summary[key]))
    table.add_row("MB loaded", f"{summary['bytes'] / 1e6:.1f}")
    table.add_row("MB/s", f"{summary['mb_per_s']:.1f}")
    if summary.get("paused_until"):
        table.add_row(f"paused until {summary['paused_until']}", str(summary.get("not_started", 0)))
    console.show(table)
    if failures:
        ft = Table(title="failed studies (see pacs2xnat failures)")
        for col in ("session", "reason", "message"):
            ft.add_column(col)
        for s, o in failures[:50]:
            ft.add_row(s.session_label, o.reason_category or "", (o.message or "")[:120])
        console.show(ft)
