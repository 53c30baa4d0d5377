"""``pacs2xnat failures``: the failure register (mart ``ingest_failures``), printed, exported,
and retried.

SQL decides (``int_ingest_failures__classified``): which failures are open, which retryable.
This module only builds the register, reads it, prints it as a table on stdout (counts per
reason at the foot), writes it as an Excel-safe CSV through ``export.py``'s writer, and
lists the retryable Study UIDs (``pacs2xnat failures --retry`` hands them to the loader).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from connectors import console
from connectors.outputs.export import escape_cell, write_csv_atomic
from connectors.warehouse.builds import Selection, refresh
from connectors.warehouse.runs import RunContext

logger = logging.getLogger(__name__)

REGISTER = "main.ingest_failures"
ORDER = "order by reason_category, last_failed_at, session_label, study_instance_uid"

#: (CSV header, register column): what the team's failure spreadsheet shows, in that order.
CSV_COLUMNS: tuple[tuple[str, str], ...] = (
    ("Accession Number", "accession_number"),
    ("Study UID", "study_instance_uid"),
    ("NHS Number", "nhs_number"),
    ("Subject", "subject_label"),
    ("Session", "session_label"),
    ("Stage", "stage"),
    ("Reason", "reason_category"),
    ("Transient", "is_transient"),
    ("Retryable", "is_retryable"),
    ("Attempts", "attempts"),
    ("Failed Attempts", "failed_attempts"),
    ("First Failed", "first_failed_at"),
    ("Last Failed", "last_failed_at"),
    ("Last Message", "last_message"),
    ("Resolution", "resolution_outcome"),
    ("Resolution Note", "resolution_note"),
    ("Resolved On", "resolved_on"),
    ("Resolved By", "resolved_by"),
)


#: The register and the manifest it decides, with their data tests (a data test on both
#: would otherwise run against a manifest not built).
REGISTER_MODELS = Selection(select=("+ingest_failures", "+ingest_manifest"))


def build_register(rc: RunContext) -> None:
    """Build the register, unless nothing changed since the last build that covered it."""
    refresh(rc, REGISTER_MODELS, quiet=not console.verbose())


def retryable_study_uids(rc: RunContext) -> set[str]:
    """The Study UIDs the register says to load again (transient, or resolved ``retry``)."""
    rows = rc.warehouse.read_relation(REGISTER, "where is_retryable")
    return {str(r["study_instance_uid"]) for r in rows}


def open_failures(rc: RunContext) -> list[dict[str, Any]]:
    """The register's open rows (no resolution, or 'retry'), oldest reason group first."""
    return rc.warehouse.read_relation(REGISTER, f"where is_open {ORDER}")


def show_failures(rc: RunContext, csv_path: Path | None = None) -> dict[str, Any]:
    """Build the register, print its open rows, and write them to ``csv_path`` if given."""
    build_register(rc)
    rows = open_failures(rc)
    by_reason = Counter(str(r["reason_category"]) for r in rows)
    summary: dict[str, Any] = {
        "open": len(rows),
        "retryable": sum(1 for r in rows if r["is_retryable"]),
        "held_back": sum(1 for r in rows if r["stage"] == "held_back"),
        "by_reason": dict(sorted(by_reason.items())),
    }
    if not console.json_mode():
        out = console.out
        if not out.is_terminal:  # a pipe or a file gets the whole table, not 80 columns
            out = Console(file=out.file, width=200, soft_wrap=True)
        out.print(_table(rows, by_reason))
    if csv_path is not None:
        digest = write_csv_atomic(Path(csv_path), _csv_lines(rows))
        summary |= {"csv": str(csv_path), "sha256": digest}
        console.say(f"failure register: {len(rows)} open failures -> {csv_path}")
    logger.info("failure register: %d open, %d retryable", len(rows), summary["retryable"])
    return summary


def _table(rows: list[dict[str, Any]], by_reason: Counter[str]) -> Table:
    foot = ", ".join(f"{k} {v}" for k, v in sorted(by_reason.items())) or "none"
    table = Table(
        title=f"pacs2xnat failures: {len(rows)} open",
        caption=f"open failures by reason: {foot}",
        caption_justify="left",
    )
    table.add_column("reason", no_wrap=True)
    for col in ("session", "stage", "attempts", "last failed", "retry", "resolution"):
        table.add_column(col, no_wrap=True)
    table.add_column("message", max_width=60)
    for r in rows:
        table.add_row(
            str(r["reason_category"]),
            str(r["session_label"] or r["study_instance_uid"]),
            str(r["stage"]),
            str(r["attempts"]),
            _text(r["last_failed_at"]),
            "yes" if r["is_retryable"] else "no",
            str(r["resolution_outcome"] or ""),
            (r["last_message"] or "")[:100],
        )
    return table


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _csv_lines(rows: Iterable[dict[str, Any]]) -> Iterator[list[str]]:
    yield [h for h, _ in CSV_COLUMNS]
    for r in rows:
        yield [escape_cell(_text(r[c])) for _, c in CSV_COLUMNS]
