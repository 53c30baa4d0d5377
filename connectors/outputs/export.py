"""The ingest CSV that CSC receives, written from the ``ingest_manifest`` mart.

Decisions (DESIGN.md fixes the columns, ISO dates and UTF-8):

* **UTF-8 with a byte-order mark** in a file. Excel opens a BOM-less CSV in the machine's ANSI
  code page, so "Télé" or "MÜLLER" would come out garbled; with the BOM it reads UTF-8. Python
  reads it with ``encoding="utf-8-sig"`` (plain ``utf-8`` keeps the BOM on the first header).
  On stdout (``-``, for pipes) there is no BOM.
* **CRLF line endings**, as RFC 4180 and Python's ``csv`` module write them; Excel, LibreOffice
  and ``csv`` readers all accept them, and a field with an embedded newline stays quoted.
* **CSV injection** (OWASP): a cell beginning with ``=``, ``+``, ``-``, ``@``, tab or carriage
  return is prefixed with ``'`` so a spreadsheet shows it as text instead of running it.
* **Atomic**: written to a temporary file beside the target (mode 0600), flushed and fsync'd,
  then ``os.replace``'d over it; on any failure the temporary file is removed and no target
  appears.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import logging
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from connectors import console
from connectors.files import atomic_write, sha256_file
from connectors.warehouse.runs import RunContext
from connectors.warehouse.store import Warehouse

logger = logging.getLogger(__name__)

MANIFEST = "main.ingest_manifest"

#: (CSV header, manifest column), in the contract's order: the five PACS columns, then the link.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("Accession Number", "accession_number"),
    ("Patient ID", "patient_id"),
    ("Study Date", "study_date"),
    ("Study Description", "study_description"),
    ("Study UID", "study_instance_uid"),
    ("NHS Number", "nhs_number"),
    ("Subject", "subject_label"),
    ("Session", "session_label"),
)
HEADER = tuple(h for h, _ in COLUMNS)

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def escape_cell(value: str) -> str:
    """A cell a spreadsheet would run as a formula, prefixed with ``'`` (OWASP CSV injection)."""
    return "'" + value if value.startswith(FORMULA_PREFIXES) else value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    return escape_cell(str(value))


def manifest_rows(warehouse: Warehouse) -> list[dict[str, Any]]:
    """The manifest's rows in a stable order; ``StepFailed`` (exit 2) if dbt has not built it."""
    return warehouse.read_relation(
        MANIFEST,
        "where ingest_action = 'load' "
        "order by subject_label, study_date, accession_number, study_instance_uid",
        columns=[c for _, c in COLUMNS],
        required="run `pacs2xnat build` first",
    )


def render_rows(rows: Iterable[dict[str, Any]]) -> Iterable[list[str]]:
    """The header, then each manifest row as CSV cells (ISO dates, escaped formulas)."""
    yield list(HEADER)
    for row in rows:
        yield [_cell(row[c]) for _, c in COLUMNS]


def write_csv_atomic(path: Path, lines: Iterable[Sequence[str]]) -> str:
    """Write the CSV to ``path`` atomically, owner-only (UTF-8 with BOM, CRLF); its SHA-256."""

    def write(f: IO[Any]) -> None:
        csv.writer(f, lineterminator="\r\n").writerows(lines)

    atomic_write(path, write, binary=False, encoding="utf-8-sig", newline="")
    return sha256_file(path)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def default_path(rc: RunContext) -> Path:
    """``warehouse/exports/ingest_<YYYYMMDD>_<run_id>.csv`` beside the warehouse file."""
    today = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
    return rc.settings.warehouse_dir / "exports" / f"ingest_{today}_{rc.run_id}.csv"


def export_ingest_csv(rc: RunContext, file: Path | None) -> dict[str, Any]:
    """Write the ingest CSV (to ``file``, the default path, or stdout for ``-``).

    Returns the run summary: rows written, the path and the file's SHA-256.
    """
    rows = manifest_rows(rc.warehouse)
    if file is not None and str(file) == "-":
        buf = io.StringIO(newline="")
        writer = csv.writer(buf, lineterminator="\r\n")
        writer.writerows(render_rows(rows))
        text = buf.getvalue()
        sys.stdout.write(text)
        sys.stdout.flush()
        logger.info("ingest CSV: %d studies to stdout", len(rows))
        return {"rows": len(rows), "path": "-", "sha256": _sha256(text.encode("utf-8"))}
    path = Path(file) if file is not None else default_path(rc)
    digest = write_csv_atomic(path, render_rows(rows))
    logger.info("ingest CSV: %d studies to %s (sha256 %s)", len(rows), path, digest)
    console.say(f"ingest CSV: {len(rows)} studies -> {path}")
    return {"rows": len(rows), "path": str(path), "sha256": digest}
