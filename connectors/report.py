"""``pacs2xnat report``: the data-availability document (step 6) as a workbook and an HTML page.

Reads the marts dbt built (``data_availability``, ``data_availability_summary``,
``reconciliation``, ``data_availability_sessions``; contracts enforced) and writes
``data_availability.xlsx`` (``report_xlsx``) and ``data_availability.html`` (``report_html``)
into ``--out`` or ``<warehouse dir>/reports``, each atomically and owner-only (0600).
SQL decides what the numbers are; this module only reads and lays them out.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from connectors.errors import StepFailed
from connectors.runs import RunContext, sha256_file
from connectors.warehouse import Warehouse, utcnow

logger = logging.getLogger(__name__)

WORKBOOK_NAME = "data_availability.xlsx"
HTML_NAME = "data_availability.html"

# mart -> order by (the order people read them in)
MARTS: dict[str, str] = {
    "data_availability": "nhs_number, modality nulls first",
    "data_availability_summary": "study_quarter, modality",
    "reconciliation": "reconciliation_status, failure_reason, unexpected_reason, nhs_number, "
    "study_date, reconciliation_key",
    "data_availability_sessions": "nhs_number, study_date, session_id",
}
# The swimmer plot needs only these columns of the (largest) sessions mart.
SESSION_POINT_COLUMNS = ("nhs_number", "modality", "days_from_reference")


@dataclass
class Table:
    """A mart's rows as tuples (lighter than dicts at 200k rows) and its column names."""

    name: str
    columns: list[str]
    rows: list[tuple[Any, ...]]

    def column(self, name: str) -> int:
        return self.columns.index(name)


@dataclass
class ReportData:
    generated_at: dt.datetime
    run_id: str
    rules_sha256: str | None
    last_sync: dict[str, Any] | None
    availability: Table
    summary: Table
    reconciliation: Table
    session_points: Table
    counts: dict[str, Any] = field(default_factory=dict)


def run_report(rc: RunContext, out: Path | None) -> dict[str, Any]:
    """Write the workbook and the page; returns the run summary (paths, sha256, counts)."""
    from connectors.report_html import write_html
    from connectors.report_xlsx import write_workbook

    out_dir = Path(out) if out is not None else rc.settings.warehouse_dir / "reports"
    data = load_report_data(rc.warehouse, run_id=rc.run_id, rules_sha256=rc.rules_sha256())
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    workbook = out_dir / WORKBOOK_NAME
    page = out_dir / HTML_NAME
    atomic_write(workbook, lambda f: write_workbook(data, f), binary=True)
    atomic_write(page, lambda f: write_html(data, f), binary=False)
    logger.info("report written to %s", out_dir)
    return {
        "workbook": str(workbook),
        "workbook_sha256": sha256_file(workbook),
        "html": str(page),
        "html_sha256": sha256_file(page),
        "html_bytes": page.stat().st_size,
        "counts": data.counts,
    }


def load_report_data(warehouse: Warehouse, *, run_id: str, rules_sha256: str | None) -> ReportData:
    """Read the four marts (read-only connection); ``StepFailed`` if dbt has not built them."""
    with warehouse.connect(read_only=True) as con:
        present = {
            r[0]
            for r in con.execute(
                "select table_name from information_schema.tables where table_schema = 'main'"
            ).fetchall()
        }
        missing = [m for m in MARTS if m not in present]
        if missing:
            raise StepFailed(
                f"the data-availability marts are not built yet ({', '.join(missing)}): "
                "run `pacs2xnat sync` and then `pacs2xnat build` first"
            )
        tables: dict[str, Table] = {}
        for mart, order in MARTS.items():
            cols = "*"
            if mart == "data_availability_sessions":
                cols = ", ".join(SESSION_POINT_COLUMNS)
            cur = con.execute(f"select {cols} from main.{mart} order by {order}")
            names = [d[0] for d in cur.description]
            tables[mart] = Table(mart, names, cur.fetchall())
        sync = con.execute(
            "select run_id, finished_at from raw.runs where command = 'sync' "
            "and outcome = 'success' order by started_at desc, run_id desc limit 1"
        ).fetchone()
    data = ReportData(
        generated_at=utcnow().replace(microsecond=0),
        run_id=run_id,
        rules_sha256=rules_sha256,
        last_sync={"run_id": sync[0], "finished_at": sync[1]} if sync else None,
        availability=tables["data_availability"],
        summary=tables["data_availability_summary"],
        reconciliation=tables["reconciliation"],
        session_points=tables["data_availability_sessions"],
    )
    data.counts = compute_counts(data)
    return data


def compute_counts(data: ReportData) -> dict[str, Any]:
    """The cover's headline numbers, from the marts' rows."""
    av = data.availability
    i_nhs, i_mod, i_n = (
        av.column("nhs_number"),
        av.column("modality"),
        av.column("number_of_studies"),
    )
    i_listed = av.column("is_on_master_list")
    patients: set[str] = set()
    with_data: set[str] = set()
    listed: set[str] = set()
    per_modality: Counter[str] = Counter()
    for row in av.rows:
        patients.add(row[i_nhs])
        if row[i_listed]:
            listed.add(row[i_nhs])
        if row[i_n]:
            with_data.add(row[i_nhs])
            per_modality[row[i_mod]] += row[i_n]
    rec = data.reconciliation
    i_status, i_reason = rec.column("reconciliation_status"), rec.column("failure_reason")
    i_unexp = rec.column("unexpected_reason")
    status: Counter[str] = Counter(r[i_status] for r in rec.rows)
    missing_by_reason: Counter[str] = Counter(
        r[i_reason] for r in rec.rows if r[i_status] == "missing"
    )
    unexpected_by_reason: Counter[str] = Counter(
        r[i_unexp] for r in rec.rows if r[i_status] == "unexpected"
    )
    return {
        "patients": len(patients),
        "patients_on_master_list": len(listed),
        "patients_with_studies_in_xnat": len(with_data),
        "studies_in_xnat": sum(per_modality.values()),
        "studies_per_modality": dict(sorted(per_modality.items())),
        "reconciliation": {
            k: status.get(k, 0) for k in ("present", "missing", "uid_mismatch", "unexpected")
        },
        "missing_by_reason": dict(missing_by_reason.most_common()),
        "unexpected_by_reason": dict(unexpected_by_reason.most_common()),
    }


def atomic_write(path: Path, write: Callable[[IO[Any]], None], *, binary: bool) -> None:
    """Write through a 0600 temp file beside ``path`` and ``os.replace`` it: all or nothing."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with _open_fd(fd, binary) as f:
            write(f)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _open_fd(fd: int, binary: bool) -> Iterator[IO[Any]]:
    if binary:
        with os.fdopen(fd, "wb") as fb:
            yield fb
    else:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as ft:
            yield ft
