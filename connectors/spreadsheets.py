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

import datetime as dt
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from connectors import console
from connectors.errors import InputError
from connectors.runs import RunContext
from connectors.sheets import (
    Book,
    Cell,
    Header,
    Sheet,
    cell_at,
    clean_text,
    data_rows,
    find_header,
    header_key,
    headers_seen,
    read_book,
    serial_to_date,
)
from connectors.warehouse import utcnow

logger = logging.getLogger(__name__)

TITLES = ("MRN", "NHS Number", "Reference Date", "Status", "Patient Name", "Birth Date")
FIELDS: dict[str, str] = {header_key(t): t for t in TITLES}
MRN, NHS, REF, STATUS, NAME, BIRTH = (header_key(t) for t in TITLES)
DATE_FIELDS = (REF, BIRTH)
WITHDRAWN_WORDS = {"withdrawn", "opted out", "opt out", "optout", "optedout", "withdrew"}
MAX_SERIAL = 2958465  # 9999-12-31
SHOW_ROWS = 5

#: Repair kinds, as counted in the summary and named in the command's output.
KINDS = {
    "nhs_number_as_number": "NHS numbers stored as numbers",
    "nhs_number_separators": "NHS numbers with spaces or dashes",
    "mrn_as_number": "MRNs stored as numbers with a decimal part",
    "mrn_leading_zeros": "MRNs with lost leading zeros restored",
    "serial_date": "Excel serial dates",
    "text_date": "dates typed as day/month/year text",
    "spaces": "cells with stray or invisible spaces",
    "blank_status": "blank Status taken as active",
}


@dataclass
class Row:
    """One master-list row after repair, and what was repaired on it."""

    source_row: int
    values: dict[str, Any]
    repairs: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)

    def repaired(self, kind: str, text: str | None = None) -> None:
        self.kinds.append(kind)
        if text:
            self.repairs.append(text)


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
    for cell in got.values():
        if isinstance(cell.value, str) and cell.value != clean_text(cell.value):
            row.repaired("spaces")
    mrn = _mrn(got[MRN], header.titles[MRN], mrn_width, row)
    if mrn is None:
        raise fail(
            MRN, "no MRN on this row (every patient needs one; delete the row if it is empty)"
        )
    row.values["mrn"] = mrn
    row.values["nhs_number"] = _nhs(got.get(NHS, Cell()), header.titles.get(NHS, ""), row, fail)
    for key, col in ((REF, "reference_date"), (BIRTH, "birth_date")):
        found = got.get(key)
        row.values[col] = (
            None if found is None else _date(found, header.titles[key], sheet, row, fail, key)
        )
    row.values["status"] = _status(got.get(STATUS), row, fail)
    name = got.get(NAME)
    row.values["patient_name"] = (
        None if name is None or name.is_blank else clean_text(str(name.value))
    )
    return row


def _as_integral_text(value: float) -> str | None:
    return str(int(value)) if value == value and float(value).is_integer() else None


def _mrn(cell: Cell, title: str, cfg_width: int, row: Row) -> str | None:
    v = cell.value
    if cell.is_blank:
        return None
    if isinstance(v, bool):
        text = str(v).upper()
    elif isinstance(v, float):
        integral = _as_integral_text(v)
        text = integral if integral is not None else repr(v)
        if integral is not None:
            row.repaired("mrn_as_number", f"{title} {v!r} -> {integral}")
    elif isinstance(v, int):
        text = str(v)
    elif isinstance(v, dt.datetime | dt.date):
        text = v.isoformat()
    else:
        text = clean_text(str(v))
        m = re.fullmatch(r"(\d+)\.0+", text)
        if m:
            row.repaired("mrn_as_number", f"{title} {text!r} -> {m.group(1)}")
            text = m.group(1)
    width = _format_width(cell.number_format) if isinstance(v, int | float) else 0
    width = width or cfg_width
    if width and text.isdigit() and len(text) < width:
        padded = text.zfill(width)
        row.repaired("mrn_leading_zeros", f"{title} {text} -> {padded}")
        text = padded
    return text


def _format_width(number_format: str) -> int:
    """``00000000`` (Excel's custom format that shows leading zeros) -> 8; anything else 0."""
    fmt = number_format.strip().strip('"')
    return len(fmt) if re.fullmatch(r"0{2,}", fmt) else 0


def _nhs(cell: Cell, title: str, row: Row, fail: Any) -> str | None:
    v = cell.value
    if cell.is_blank:
        return None
    if isinstance(v, bool):
        return str(v).upper()
    if isinstance(v, float):
        integral = _as_integral_text(v)
        if integral is None:
            return repr(v)  # loaded as it is; the models report it invalid
        row.repaired("nhs_number_as_number", f"{title} {v!r} -> {integral}")
        return integral
    if isinstance(v, int):
        return str(v)
    text = clean_text(str(v))
    if re.fullmatch(r"\d+\.0+", text):
        fixed = text.split(".")[0]
        row.repaired("nhs_number_as_number", f"{title} {text} -> {fixed}")
        return fixed
    if re.fullmatch(r"[+]?\d+(\.\d+)?[eE][+]?\d+", text):
        try:
            number = Decimal(text)
        except InvalidOperation:  # pragma: no cover - the pattern is valid Decimal syntax
            return text
        if number.as_tuple().exponent > 0:  # type: ignore[operator]
            raise fail(
                NHS,
                f"{text!r} lost digits to Excel's scientific notation; format the column as "
                "Text (or Number with 0 decimals) in the original workbook and save it again",
            )
        if number == number.to_integral_value():
            fixed = str(int(number))
            row.repaired("nhs_number_as_number", f"{title} {text} -> {fixed}")
            return fixed
        return text
    if re.fullmatch(r"\d[\d\s\-\u00a0]*\d", text) and not text.isdigit():
        fixed = re.sub(r"[\s\-\u00a0]", "", text)
        row.repaired("nhs_number_separators", f"{title} {text!r} -> {fixed}")
        return fixed
    return text


_ISO = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T]00:00(?::00(?:\.0+)?)?)?")
_UK = re.compile(r"(\d{1,2})([/.\-])(\d{1,2})\2(\d{4})")
_SERIAL_TEXT = re.compile(r"\d{1,7}(?:\.\d+)?")
DATE_HELP = "use YYYY-MM-DD or DD/MM/YYYY (day first)"


def _date(cell: Cell, title: str, sheet: Sheet, row: Row, fail: Any, key: str) -> dt.date | None:
    v = cell.value
    if cell.is_blank:
        return None
    if isinstance(v, dt.datetime):
        return v.date()
    if isinstance(v, dt.date):
        return v
    if isinstance(v, bool):
        raise fail(key, f"cannot read {v!r} as a date; {DATE_HELP}")
    if isinstance(v, int | float):
        return _serial(float(v), title, sheet, row, fail, key)
    text = clean_text(str(v))
    try:
        m = _ISO.fullmatch(text)
        if m:
            return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        m = _UK.fullmatch(text)
        if m:
            d = dt.date(int(m.group(4)), int(m.group(3)), int(m.group(1)))
            row.repaired("text_date", f"{title} {text!r} -> {d.isoformat()}")
            return d
    except ValueError:
        raise fail(key, f"{text!r} is not a real date; {DATE_HELP}") from None
    if _SERIAL_TEXT.fullmatch(text):
        return _serial(float(text), title, sheet, row, fail, key)
    raise fail(key, f"cannot read {text!r} as a date; {DATE_HELP}")


def _serial(value: float, title: str, sheet: Sheet, row: Row, fail: Any, key: str) -> dt.date:
    shown = str(int(value)) if value.is_integer() else str(value)
    if not (0 if sheet.date1904 else 1) <= value <= MAX_SERIAL:
        raise fail(key, f"the number {shown} is not an Excel date; {DATE_HELP}")
    try:
        d = serial_to_date(value, date1904=sheet.date1904)
    except ValueError:
        raise fail(
            key,
            f"Excel serial date {shown} is 1900-02-29, a day that never existed "
            "(Excel's 1900 leap-year bug); type the real date",
        ) from None
    row.repaired("serial_date", f"{title} serial {shown} -> {d.isoformat()}")
    return d


def _status(cell: Cell | None, row: Row, fail: Any) -> str:
    if cell is None or cell.is_blank:
        if cell is not None:
            row.repaired("blank_status")
        return "active"
    text = clean_text(str(cell.value))
    key = re.sub(r"[\s_\-]+", " ", text.lower()).strip()
    if key == "active":
        return "active"
    if key in WITHDRAWN_WORDS or key.replace(" ", "") in WITHDRAWN_WORDS:
        return "withdrawn"
    raise fail(
        STATUS,
        f"unknown status {text!r}; use active or withdrawn (blank means active, "
        "'opted out' means withdrawn)",
    )


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
