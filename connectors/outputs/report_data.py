"""The data-availability marts as the report's renderers read them (``report_html``,
``report_xlsx``): each mart read once through ``Warehouse.read_table``. Every number and order
people see comes from a mart (the cover's from ``data_availability_headlines``, the patient
table's from ``data_availability_patients``); this module only reshapes rows."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from connectors.clock import utcnow
from connectors.warehouse.store import Warehouse

NOT_BUILT = "run `pacs2xnat sync` and then `pacs2xnat build` first"

#: mart -> (columns, where/order by): the order people read them in. The swimmer plot needs
#: only three columns of the (largest) sessions mart.
MARTS: dict[str, tuple[tuple[str, ...], str]] = {
    "data_availability": ((), "order by nhs_number, modality nulls first"),
    "data_availability_summary": ((), "order by study_quarter, modality"),
    "reconciliation": (
        (),
        "order by reconciliation_status, failure_reason, unexpected_reason, nhs_number, "
        "study_date, reconciliation_key",
    ),
    "data_availability_sessions": (
        ("nhs_number", "modality", "days_from_reference"),
        "order by nhs_number, study_date, session_id",
    ),
    "data_availability_patients": ((), "order by nhs_number"),
    "data_availability_headlines": ((), "order by measure_order, sort_order"),
}


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
    patients: Table
    headlines: Table

    @property
    def counts(self) -> dict[str, Any]:
        """The headlines as the cover and the page print them: a number per measure, or an
        ordered {category: number} (the bar's segments: a list of [status, reason, number])."""
        h = self.headlines
        i_m, i_c, i_s, i_v = (h.column(c) for c in ("measure", "category", "subcategory", "value"))
        out: dict[str, Any] = {
            "reconciliation": {},
            "studies_per_modality": {},
            "missing_by_reason": {},
            "unexpected_by_reason": {},
            "reconciliation_segments": [],
        }
        for row in h.rows:
            measure, category, value = row[i_m], row[i_c], row[i_v]
            if measure == "reconciliation_segments":
                out[measure].append([category, row[i_s], value])
            elif category is None:
                out[measure] = value
            else:
                out[measure][category] = value
        for k in ("patients", "patients_on_master_list", "patients_with_studies_in_xnat"):
            out.setdefault(k, 0)
        out.setdefault("studies_in_xnat", 0)
        return out


def load_report_data(warehouse: Warehouse, *, run_id: str, rules_sha256: str | None) -> ReportData:
    """Read the report's marts; ``StepFailed`` if dbt has not built them."""
    tables: dict[str, Table] = {}
    for mart, (columns, order) in MARTS.items():
        names, rows = warehouse.read_table(
            f"main.{mart}", order, columns=columns, required=NOT_BUILT
        )
        tables[mart] = Table(mart, names, rows)
    syncs = warehouse.read_relation(
        "raw.xnat_syncs", "order by finished_at desc, sync_id desc limit 1"
    )
    return ReportData(
        generated_at=utcnow().replace(microsecond=0),
        run_id=run_id,
        rules_sha256=rules_sha256,
        last_sync=(
            {k: syncs[0][k] for k in ("run_id", "sync_id", "finished_at")} if syncs else None
        ),
        availability=tables["data_availability"],
        summary=tables["data_availability_summary"],
        reconciliation=tables["reconciliation"],
        session_points=tables["data_availability_sessions"],
        patients=tables["data_availability_patients"],
        headlines=tables["data_availability_headlines"],
    )
