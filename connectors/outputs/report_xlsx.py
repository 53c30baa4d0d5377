"""The data-availability workbook (openpyxl, write-only mode: rows stream straight to the zip).

Sheets: Cover (when, which run, rules version, headline counts), then one per mart: Availability
(``data_availability``), Summary (``data_availability_summary``), Reconciliation
(``reconciliation``). Each data sheet has a bold frozen header row, an autofilter, column widths
that fit the text (capped at 60), dates as real Excel dates and numbers as numbers. A text that
Excel would run as a formula (``=...``) stays text; characters XML cannot hold are dropped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import IO, Any

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter

from connectors.outputs.report_data import ReportData, Table
from connectors.seams.openpyxl_write_only import WriteOnlyWorksheet

SHEETS: tuple[tuple[str, str], ...] = (
    ("Availability", "availability"),
    ("Summary", "summary"),
    ("Reconciliation", "reconciliation"),
)
DATE_FORMAT = "yyyy-mm-dd"
DATETIME_FORMAT = "yyyy-mm-dd hh:mm:ss"
MAX_WIDTH = 60
MIN_WIDTH = 6
WIDTH_SAMPLE = 20_000  # rows looked at to size the columns
ACRONYMS = {"nhs": "NHS", "mrn": "MRN", "xnat": "XNAT", "uid": "UID", "id": "ID"}
BOLD = Font(bold=True)


def header_label(column: str) -> str:
    """``xnat_study_instance_uid`` -> ``XNAT study instance UID``."""
    words = [ACRONYMS.get(w, w) for w in column.split("_")]
    first = words[0] if words[0].isupper() else words[0].capitalize()
    return " ".join([first, *words[1:]])


def write_workbook(data: ReportData, f: IO[bytes]) -> None:
    wb = Workbook(write_only=True)
    _cover(wb.create_sheet("Cover"), data)
    for title, attr in SHEETS:
        table: Table = getattr(data, attr)
        _data_sheet(wb.create_sheet(title), table)
    wb.save(f)


def _cover(ws: WriteOnlyWorksheet, data: ReportData) -> None:
    ws.column_dimensions["A"].width = 42
    ws.column_dimensions["B"].width = 70
    c = data.counts
    sync = data.last_sync or {}
    rows: list[tuple[str, Any]] = [
        ("Generated at (UTC)", data.generated_at),
        ("Report run id", data.run_id),
        ("Rules version (sha256 of study_description_rules.csv)", data.rules_sha256 or "none"),
        ("XNAT snapshot: sync run id", sync.get("run_id") or "no complete sync yet"),
        ("XNAT snapshot: synced at (UTC)", sync.get("finished_at")),
        ("Patients (master list or XNAT)", c["patients"]),
        ("Patients on the current master list", c["patients_on_master_list"]),
        ("Patients with studies in XNAT", c["patients_with_studies_in_xnat"]),
        ("Studies in XNAT", c["studies_in_xnat"]),
    ]
    rows += [(f"Studies in XNAT: {m}", n) for m, n in c["studies_per_modality"].items()]
    rows += [(f"Reconciliation: {k}", n) for k, n in c["reconciliation"].items()]
    rows += [(f"Missing because: {k}", n) for k, n in c["missing_by_reason"].items()]
    rows += [(f"Unexpected because: {k}", n) for k, n in c["unexpected_by_reason"].items()]
    title = WriteOnlyCell(ws, value="Data availability: what XNAT holds, reconciled with PACS")
    title.font = Font(bold=True, size=14)
    ws.append([title])
    ws.append([])
    for label, value in rows:
        ws.append([_text_cell(ws, label, bold=True), _cell(ws, value)])
    ws.append([])
    ws.append(
        [
            "Sheets: Availability (per patient and modality), Summary (per modality and "
            "quarter), Reconciliation (PACS selection against XNAT)."
        ]
    )


def _data_sheet(ws: WriteOnlyWorksheet, table: Table) -> None:
    ncols = len(table.columns)
    last_col = get_column_letter(max(ncols, 1))
    for i, width in enumerate(_widths(table), start=1):
        ws.column_dimensions[get_column_letter(i)].width = width
    ws.freeze_panes = "A2"
    ws.auto_filter.ref = f"A1:{last_col}{len(table.rows) + 1}"
    ws.append([_text_cell(ws, header_label(c), bold=True) for c in table.columns])
    for row in table.rows:
        ws.append([_value(ws, v) for v in row])


def _value(ws: WriteOnlyWorksheet, v: Any) -> Any:
    """Plain values stream fastest; only text Excel would misread needs its own cell."""
    if isinstance(v, str) and (v[:1] == "=" or ILLEGAL_CHARACTERS_RE.search(v)):
        return _text_cell(ws, v)
    return v  # openpyxl gives date/datetime values a date number format itself


def _cell(ws: WriteOnlyWorksheet, v: Any) -> Any:
    if isinstance(v, str):
        return _text_cell(ws, v)
    if isinstance(v, dt.datetime):
        cell = WriteOnlyCell(ws, value=v)
        cell.number_format = DATETIME_FORMAT
        return cell
    if isinstance(v, dt.date):
        cell = WriteOnlyCell(ws, value=v)
        cell.number_format = DATE_FORMAT
        return cell
    return v


def _text_cell(ws: WriteOnlyWorksheet, text: str, bold: bool = False) -> WriteOnlyCell:
    cell = WriteOnlyCell(ws, value=ILLEGAL_CHARACTERS_RE.sub("", text))
    cell.data_type = "s"  # never a formula, whatever the text starts with
    if bold:
        cell.font = BOLD
    return cell


def _widths(table: Table) -> list[float]:
    widths = [len(header_label(c)) + 3 for c in table.columns]  # + room for the filter button
    for row in _sample(table.rows):
        for i, v in enumerate(row):
            n = 10 if isinstance(v, dt.date) else len(str(v)) if v is not None else 0
            if n + 2 > widths[i]:
                widths[i] = n + 2
    return [float(min(max(w, MIN_WIDTH), MAX_WIDTH)) for w in widths]


def _sample(rows: Sequence[tuple[Any, ...]]) -> Iterable[tuple[Any, ...]]:
    return rows[:WIDTH_SAMPLE]
