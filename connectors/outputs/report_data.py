"""The data-availability marts as the report's renderers read them (``report_html``,
``report_xlsx``): one read-only pass over four marts, plus the cover's headline counts."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from connectors.clock import utcnow
from connectors.errors import StepFailed
from connectors.warehouse.store import Warehouse

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
