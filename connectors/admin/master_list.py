"""The master patient list (.xlsx or .csv) -> ``raw.master_patients``, repairing Excel's damage.

Repaired, and said so per row (``repairs``) and in the command's output: NHS numbers stored as
numbers (``9434765919.0``, ``9.434765919E+09``) or typed with spaces or dashes, MRNs stored as
numbers (``1234.0``) or stripped of leading zeros where the width is known (the cell's number
format ``00000000`` or ``[patients] mrn_width``), Excel serial dates and UK text dates, stray and
invisible spaces, a blank Status. Refused with an ``InputError`` naming file, row and column
(nothing written): what cannot be repaired without guessing. Invalid NHS numbers are loaded:
the models report them. All rows of one import go in with one append.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors import console
from connectors.admin.repairs import (
    BIRTH,
    FIELDS,
    KINDS,
    MRN,
    NAME,
    NHS,
    REF,
    STATUS,
    Row,
    repair_date,
    repair_mrn,
    repair_nhs,
    repair_status,
)
from connectors.admin.sheets import (
    Book,
    Cell,
    Header,
    Sheet,
    cell_at,
    clean_text,
    data_rows,
    find_header,
    headers_seen,
    read_book,
)
from connectors.clock import utcnow
from connectors.errors import InputError
from connectors.warehouse.runs import RunContext

logger = logging.getLogger(__name__)

SHOW_ROWS = 5


@dataclass
class MasterList:
    path: Path
    sheet: str | None
    header_row: int
    rows: list[Row]

    def kind_counts(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for r in self.rows:
            counts.update(set(r.kinds))
        return {k: counts[k] for k in KINDS if counts[k]}


def read_master_list(path: Path, *, mrn_width: int = 0) -> MasterList:
    """Parse and repair the whole list, or raise ``InputError`` at the first thing we can't fix."""
    book = read_book(path, allow_csv=True)
    sheet, header = _locate(book)
    file = book.path
    rows: list[Row] = []
    for r, cells in data_rows(sheet, header):
        rows.append(_parse_row(file, sheet, header, r, cells, mrn_width))
    if not rows:
        raise InputError(
            "no patient rows below the header", file=file, sheet=sheet.name, row=header.row
        )
    return MasterList(path=file, sheet=sheet.name, header_row=header.row, rows=rows)


def _locate(book: Book) -> tuple[Sheet, Header]:
    """The first sheet whose first ten rows hold an MRN header (the first sheet, usually)."""
    if all(s.is_empty() for s in book.sheets):
        what = "the workbook has no cells" if book.kind == "xlsx" else "the file has no rows"
        raise InputError(f"no data: {what}", file=book.path)
    for sheet in book.sheets:
        header = find_header(sheet, FIELDS, MRN, file=book.path)
        if header is not None:
            return sheet, header
    first = next(s for s in book.sheets if not s.is_empty())
    seen = ", ".join(repr(h) for h in headers_seen(first)) or "nothing"
    raise InputError(
        f"no MRN column: none of the first 10 rows has a header 'MRN' (found {seen})",
        file=book.path,
        sheet=first.name,
    )


def _parse_row(
    file: Path, sheet: Sheet, header: Header, r: int, cells: list[Cell], mrn_width: int
) -> Row:
    row = Row(source_row=r, values={})

    def fail(key: str, message: str) -> InputError:
        return InputError(message, file=file, sheet=sheet.name, row=r, column=header.titles[key])

    got: dict[str, Cell] = {}
    for key, idx in header.columns.items():
        cell = cell_at(cells, idx)
        if cell.is_formula:
            formula = str(cell.value)
            shown = formula if len(formula) <= 40 else formula[:37] + "..."
            raise fail(
                key,
                f"a formula ({shown}) where a value belongs; copy the column and "
                "Paste Special > Values, then import again",
            )
        got[key] = cell
    for key, cell in got.items():
        if isinstance(cell.value, str) and cell.value != clean_text(cell.value):
            row.repaired("spaces", f"{header.titles[key]}: spaces trimmed")
    mrn = repair_mrn(got[MRN], header.titles[MRN], mrn_width, row, fail)
    if mrn is None:
        raise fail(
            MRN, "no MRN on this row (every patient needs one; delete the row if it is empty)"
        )
    row.values["mrn"] = mrn
    row.values["nhs_number"] = repair_nhs(
        got.get(NHS, Cell()), header.titles.get(NHS, ""), row, fail
    )
    for key, col in ((REF, "reference_date"), (BIRTH, "birth_date")):
        found = got.get(key)
        row.values[col] = (
            None if found is None else repair_date(found, header.titles[key], sheet, row, fail, key)
        )
    row.values["status"] = repair_status(got.get(STATUS), row, fail)
    name = got.get(NAME)
    row.values["patient_name"] = (
        None if name is None or name.is_blank else clean_text(str(name.value))
    )
    return row


def import_master_list(rc: RunContext, file: Path) -> dict[str, Any]:
    """``pacs2xnat patients import FILE``: parse, repair, append every row at once, summarise."""
    path = Path(file)
    digest = rc.add_input(path) if path.is_file() else ""
    master = read_master_list(path, mrn_width=rc.settings.patients.mrn_width)
    now = utcnow()
    source_file = str(path.resolve())
    records = [
        {
            "run_id": rc.run_id,
            "loaded_at": now,
            "source_file": source_file,
            "source_sha256": digest,
            "source_sheet": master.sheet,
            "source_row": r.source_row,
            **r.values,
            "repairs": "; ".join(r.repairs) or None,
        }
        for r in master.rows
    ]
    written = rc.warehouse.append("master_patients", records)
    counts = master.kind_counts()
    summary = {
        "file": source_file,
        "sheet": master.sheet,
        "header_row": master.header_row,
        "patients": written,
        "withdrawn": sum(1 for r in master.rows if r.values["status"] == "withdrawn"),
        "repairs": counts,
        "rows_repaired": sum(1 for r in master.rows if r.kinds),
        "without_nhs_number": sum(1 for r in master.rows if not r.values["nhs_number"]),
        "mrns_on_several_rows": sum(
            1 for n in Counter(r.values["mrn"] for r in master.rows).values() if n > 1
        ),
    }
    _say(master, summary)
    logger.info("master list: %d rows from %s, repairs %s", written, path.name, counts)
    return summary


def _say(master: MasterList, summary: dict[str, Any]) -> None:
    where = f"sheet {master.sheet}, " if master.sheet else ""
    console.say(
        f"Imported {summary['patients']} patients ({summary['withdrawn']} withdrawn) from "
        f"{master.path.name} ({where}header on row {master.header_row})."
    )
    if summary["without_nhs_number"]:
        console.say(f"{summary['without_nhs_number']} rows have no NHS number (loaded; unlinked).")
    if summary["mrns_on_several_rows"]:
        console.say(
            f"{summary['mrns_on_several_rows']} MRNs are on more than one row (loaded; the "
            "linkage report shows any MRN with two NHS numbers)."
        )
    if not summary["repairs"]:
        console.say("Nothing needed repairing.")
        return
    console.say(f"Repaired {summary['rows_repaired']} rows:")
    for kind, n in summary["repairs"].items():
        console.say(f"  {n} x {KINDS[kind]}")
    shown = [r for r in master.rows if r.repairs][:SHOW_ROWS]
    for r in shown:
        console.say(f"  row {r.source_row}: {'; '.join(r.repairs)}")
    more = sum(1 for r in master.rows if r.repairs) - len(shown)
    if more > 0:
        console.say(f"  ... and {more} more rows (see the repairs column of raw.master_patients)")
