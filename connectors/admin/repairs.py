"""Repairing one master-list cell at a time: what Excel did to identifiers, dates and statuses.

Each function returns the repaired value and records on the ``Row`` what it repaired (a kind for
the counts, a short text for ``raw.master_patients.repairs``), or raises the ``InputError`` built
by ``fail(key, message)`` when the value cannot be repaired without guessing.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from connectors.admin.sheets import Cell, Sheet, clean_text, header_key, serial_to_date

TITLES = ("MRN", "NHS Number", "Reference Date", "Status", "Patient Name", "Birth Date")
FIELDS: dict[str, str] = {header_key(t): t for t in TITLES}
MRN, NHS, REF, STATUS, NAME, BIRTH = (header_key(t) for t in TITLES)
DATE_FIELDS = (REF, BIRTH)
WITHDRAWN_WORDS = {"withdrawn", "opted out", "opt out", "optout", "optedout", "withdrew"}
MAX_SERIAL = 2958465  # 9999-12-31

#: Repair kinds, as counted in the summary and named in the command's output.
KINDS = {
    "nhs_number_as_number": "NHS numbers stored as numbers",
    "nhs_number_separators": "NHS numbers with spaces or dashes",
    "mrn_as_number": "MRNs stored as numbers with a decimal part",
    "mrn_leading_zeros": "MRNs with lost leading zeros restored",
    "serial_date": "Excel serial dates",
    "text_date": "dates typed as day/month/year text",
    "spaces": "cells with stray or invisible spaces",
    "csv_text_formula": 'identifiers wrapped as ="..." in the CSV',
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


def _as_integral_text(value: float) -> str | None:
    return str(int(value)) if value == value and float(value).is_integer() else None


def repair_mrn(cell: Cell, title: str, cfg_width: int, row: Row, fail: Any) -> str | None:
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
        text = _unwrap_text_formula(clean_text(str(v)), title, row)
        m = re.fullmatch(r"(\d+)\.0+", text)
        scientific = _from_scientific(text, MRN, fail)
        if m:
            row.repaired("mrn_as_number", f"{title} {text!r} -> {m.group(1)}")
            text = m.group(1)
        elif scientific is not None:
            row.repaired("mrn_as_number", f"{title} {text} -> {scientific}")
            text = scientific
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


def _from_scientific(text: str, key: str, fail: Any) -> str | None:
    """``9.434765919E+09`` -> ``9434765919``; None if not scientific; refused if digits lost."""
    if not re.fullmatch(r"[+]?\d+(\.\d+)?[eE][+]?\d+", text):
        return None
    try:
        number = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern is valid Decimal syntax
        return None
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and exponent > 0:
        raise fail(
            key,
            f"{text!r} lost digits to Excel's scientific notation; format the column as "
            "Text (or Number with 0 decimals) in the original workbook and save it again",
        )
    return str(int(number)) if number == number.to_integral_value() else None


def _unwrap_text_formula(text: str, title: str, row: Row) -> str:
    """``="00123"``: the CSV trick that keeps Excel from dropping zeros. Its value is ``00123``."""
    m = re.fullmatch(r'="(.*)"', text)
    if not m:
        return text
    row.repaired("csv_text_formula", f"{title} {text} -> {m.group(1)}")
    return clean_text(m.group(1))


def repair_nhs(cell: Cell, title: str, row: Row, fail: Any) -> str | None:
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
    text = _unwrap_text_formula(clean_text(str(v)), title, row)
    if re.fullmatch(r"\d+\.0+", text):
        fixed = text.split(".")[0]
        row.repaired("nhs_number_as_number", f"{title} {text} -> {fixed}")
        return fixed
    from_scientific = _from_scientific(text, NHS, fail)
    if from_scientific is not None:
        row.repaired("nhs_number_as_number", f"{title} {text} -> {from_scientific}")
        return from_scientific
    if re.fullmatch(r"\d[\d\s\-\u00a0]*\d", text) and not text.isdigit():
        fixed = re.sub(r"[\s\-\u00a0]", "", text)
        row.repaired("nhs_number_separators", f"{title} {text!r} -> {fixed}")
        return fixed
    return text


_ISO = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?")
_UK = re.compile(r"(\d{1,2})([/.\-])(\d{1,2})\2(\d{4})")
_SERIAL_TEXT = re.compile(r"\d{1,7}(?:\.\d+)?")
DATE_HELP = "use YYYY-MM-DD or DD/MM/YYYY (day first)"


def repair_date(
    cell: Cell, title: str, sheet: Sheet, row: Row, fail: Any, key: str
) -> dt.date | None:
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


def repair_status(cell: Cell | None, row: Row, fail: Any) -> str:
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
