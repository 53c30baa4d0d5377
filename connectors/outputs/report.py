"""``pacs2xnat report``: the data-availability document (step 6) as a workbook and an HTML page.

Reads the marts dbt built (``data_availability``, ``data_availability_summary``,
``reconciliation``, ``data_availability_sessions``; contracts enforced) and writes
``data_availability.xlsx`` (``report_xlsx``) and ``data_availability.html`` (``report_html``)
into ``--out`` or ``<warehouse dir>/reports``, each atomically and owner-only (0600).
SQL decides what the numbers are; this module only reads and lays them out.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from connectors.files import atomic_write, sha256_file
from connectors.outputs.report_data import load_report_data
from connectors.warehouse.runs import RunContext

logger = logging.getLogger(__name__)

WORKBOOK_NAME = "data_availability.xlsx"
HTML_NAME = "data_availability.html"


def run_report(rc: RunContext, out: Path | None) -> dict[str, Any]:
    """Write the workbook and the page; returns the run summary (paths, sha256, counts)."""
    from connectors.outputs.report_html import write_html
    from connectors.outputs.report_xlsx import write_workbook

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
