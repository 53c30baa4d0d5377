"""Reading the spreadsheets people give us (.xlsx, and .csv where allowed), in whatever state.

Shared by the master patient list (``master_list.py``) and the rules workbook (``rules.py``).
Everything here answers one question: what cells does this file hold, and where? A file that is
not what its name says (a PDF renamed ``.xlsx``, a legacy ``.xls``, an encrypted workbook, a zip
without a workbook, a binary ``.csv``) is an ``InputError`` naming the file and what it really is.
Cells keep their number format and whether they hold a formula, so callers can repair or refuse.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openpyxl.utils import get_column_letter

from connectors.errors import InputError

XLSX_EXTENSIONS = (".xlsx", ".xlsm")
CFB_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # OLE compound file: .xls, or an encrypted .xlsx
ZIP_MAGIC = b"PK\x03\x04"
HEADER_SEARCH_ROWS = 10
# White space Excel users paste in without seeing it: NBSP, figure/narrow spaces, zero-width, BOM.
_INVISIBLE = "\u00a0\u2007\u202f\u200b\u200c\u200d\u2060\ufeff"
_STRIP = " \t\r\n\v\f" + _INVISIBLE


@dataclass(frozen=True)
class Cell:
    """One cell as stored: its value, its Excel number format, whether it is a formula."""

    value: Any = None
    number_format: str = "General"
    is_formula: bool = False

    @property
    def is_blank(self) -> bool:
        return self.value is None or (isinstance(self.value, str) and not clean_text(self.value))


@dataclass
class Sheet:
    """One worksheet (or the one table of a CSV, ``name`` None). ``rows[0]`` is row 1."""

    name: str | None
    rows: list[list[Cell]]
    date1904: bool = False

    def is_empty(self) -> bool:
        return all(c.is_blank for row in self.rows for c in row)


@dataclass
class Book:
    path: Path
    kind: str  # "xlsx" | "csv"
    sheets: list[Sheet]
    encoding: str | None = None  # CSV only
    delimiter: str | None = None  # CSV only


@dataclass
class Header:
    """Where a table's header is (1-based ``row``) and which column holds each known field."""

    row: int
    columns: dict[str, int] = field(default_factory=dict)  # field key -> 0-based column index
    titles: dict[str, str] = field(default_factory=dict)  # field key -> header text as written


def clean_text(value: str) -> str:
    """Leading/trailing spaces, tabs, line breaks and invisible spaces (NBSP, zero-width) gone."""
    return value.strip(_STRIP)


def collapse_spaces(value: str) -> str:
    """Every run of white space (including NBSP and line breaks) as one plain space, trimmed."""
    text = value.translate({ord(c): " " for c in _INVISIBLE})
    return re.sub(r"\s+", " ", text).strip()


def header_key(value: Any) -> str:
    """Headers match case-, space- and underscore-insensitively: ``NHS_number``, ``NHS Number``."""
    if not isinstance(value, str):
        return ""
    text = value.translate({ord(c): " " for c in _INVISIBLE})
    return re.sub(r"[\s_]+", "", text).lower()


def column_letter(index: int) -> str:
    return get_column_letter(index + 1)


def read_book(path: Path, *, allow_csv: bool) -> Book:
    """The cells of an .xlsx (or .csv) file, or an ``InputError`` saying what the file really is."""
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", file=path)
    if not path.is_file():
        raise InputError("not a file (a folder?)", file=path)
    ext = path.suffix.lower()
    accepted = "an .xlsx or .csv file" if allow_csv else "an .xlsx workbook"
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head:
        raise InputError("the file is empty (0 bytes)", file=path)
    if ext == ".xls":
        raise InputError(
            "a legacy Excel 97-2003 .xls workbook; open it in Excel, save it as "
            "Excel Workbook (.xlsx) and import that",
            file=path,
        )
    if ext in XLSX_EXTENSIONS:
        _check_xlsx_container(path, head)
        return _read_xlsx(path)
    if ext == ".csv" and allow_csv:
        return _read_csv(path, head)
    raise InputError(
        f"unsupported file type {ext or '(no extension)'!r}; give {accepted}", file=path
    )


def _what_it_is(head: bytes) -> str:
    if head.startswith(b"%PDF"):
        return "it is a PDF"
    if head.startswith(ZIP_MAGIC):
        return "it is a zip file without a workbook inside"
    if head.startswith(CFB_MAGIC):
        return "it is an Office 97-2003 compound file"
    if b"\x00" in head:
        return "it is binary data"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<html", b"<!doctype html")):
        return "it is a web page (HTML)"
    return "it is plain text"


def _is_encrypted(path: Path) -> bool:
    """An encrypted OOXML file is a compound file holding an ``EncryptedPackage`` stream."""
    data = path.read_bytes()
    return "EncryptedPackage".encode("utf-16-le") in data or (
        "EncryptionInfo".encode("utf-16-le") in data
    )


def _check_xlsx_container(path: Path, head: bytes) -> None:
    if head.startswith(CFB_MAGIC):
        if _is_encrypted(path):
            raise InputError(
                "the workbook is password-protected (encrypted); open it in Excel, remove the "
                "password (File > Info > Protect Workbook) and save a copy to import",
                file=path,
            )
        raise InputError(
            "a legacy Excel 97-2003 workbook with an .xlsx name; open it in Excel, save it as "
            "Excel Workbook (.xlsx) and import that",
            file=path,
        )
    if not head.startswith(ZIP_MAGIC):
        raise InputError(f"not an Excel workbook: {_what_it_is(head)}", file=path)


def _read_xlsx(path: Path) -> Book:
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        wb = load_workbook(path, read_only=True, data_only=False, keep_links=False)
    except (zipfile.BadZipFile, InvalidFileException, KeyError, OSError, ValueError, TypeError):
        raise InputError(
            "not an Excel workbook: it is a zip file without a workbook inside", file=path
        ) from None
    try:
        date1904 = bool(getattr(wb, "epoch", None) and wb.epoch.year == 1904)
        sheets = []
        for ws in wb.worksheets:
            ws.reset_dimensions()  # some writers record a wrong size; read every stored cell
            rows = [[_cell(c) for c in row] for row in ws.iter_rows()]
            sheets.append(Sheet(name=ws.title, rows=rows, date1904=date1904))
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError) as e:
        raise InputError(f"the workbook is damaged and cannot be read ({e})", file=path) from None
    finally:
        wb.close()
    return Book(path=path, kind="xlsx", sheets=sheets)


def _cell(c: Any) -> Cell:
    value = getattr(c, "value", None)
    if value is None:
        return Cell()
    is_formula = getattr(c, "data_type", None) == "f"
    return Cell(value, getattr(c, "number_format", None) or "General", is_formula)


def _read_csv(path: Path, head: bytes) -> Book:
    utf16 = head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    if head.startswith((ZIP_MAGIC, CFB_MAGIC, b"%PDF")) or (b"\x00" in head and not utf16):
        raise InputError(f"not a CSV text file: {_what_it_is(head)}", file=path)
    data = path.read_bytes()
    try:
        if utf16:  # Excel's "Unicode Text" / "CSV UTF-16": tab-separated, with a BOM
            text, encoding = data.decode("utf-16"), "utf-16"
        else:
            text, encoding = data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        if utf16:
            raise InputError("not readable as UTF-16 text", file=path) from None
        # Excel's "CSV (Comma delimited)" on Windows writes the ANSI code page.
        text, encoding = data.decode("cp1252", errors="replace"), "cp1252"
    delimiter = _sniff_delimiter(text)
    try:
        records = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    except csv.Error as e:
        raise InputError(f"not readable as CSV ({e})", file=path) from None
    rows = [[Cell(v if v != "" else None) for v in rec] for rec in records]
    return Book(
        path=path,
        kind="csv",
        sheets=[Sheet(name=None, rows=rows)],
        encoding=encoding,
        delimiter=delimiter,
    )


def _sniff_delimiter(text: str) -> str:
    """Comma or semicolon (Excel in a locale with decimal commas), judged on the header line."""
    lines = [ln for ln in text.splitlines()[:HEADER_SEARCH_ROWS] if ln.strip()]
    header = next((ln for ln in lines if "mrn" in ln.lower() or "study" in ln.lower()), None)
    candidates = [header] if header else lines[:1]
    if not candidates:
        return ","
    counts = {d: candidates[0].count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def find_header(
    sheet: Sheet,
    fields: dict[str, str],
    required: str,
    *,
    file: Path,
) -> Header | None:
    """The first row (of the first ten) with the ``required`` field's header, or None.

    ``fields`` maps a field key (``header_key`` of its canonical title) to that title. Two
    columns with the same known header are an ``InputError``: we cannot guess which one is meant.
    """
    for r, row in enumerate(sheet.rows[:HEADER_SEARCH_ROWS], start=1):
        keys = [header_key(c.value) for c in row]
        if required not in keys:
            continue
        header = Header(row=r)
        for i, key in enumerate(keys):
            if key not in fields:
                continue
            if key in header.columns:
                first = header.columns[key]
                raise InputError(
                    f"the header {fields[key]!r} appears twice (columns "
                    f"{column_letter(first)} and {column_letter(i)}); keep one",
                    file=file,
                    sheet=sheet.name,
                    row=r,
                    column=clean_text(str(row[i].value)),
                )
            header.columns[key] = i
            header.titles[key] = clean_text(str(row[i].value))
        return header
    return None


def headers_seen(sheet: Sheet) -> list[str]:
    """The likeliest header of the first ten rows (most text cells), to say what we found."""
    best: list[str] = []
    for row in sheet.rows[:HEADER_SEARCH_ROWS]:
        texts = [clean_text(c.value) for c in row if isinstance(c.value, str)]
        texts = [t for t in texts if t]
        if len(texts) > len(best):
            best = texts
    return best[:8]


def cell_at(row: list[Cell], index: int) -> Cell:
    return row[index] if index < len(row) else Cell()


def data_rows(sheet: Sheet, header: Header) -> Iterable[tuple[int, list[Cell]]]:
    """(1-based row number as Excel shows it, cells) for each row below the header with a value
    in one of the known columns (notes and totals in other columns are not rows of the table)."""
    known = list(header.columns.values())
    for r, row in enumerate(sheet.rows[header.row :], start=header.row + 1):
        if not all(cell_at(row, i).is_blank for i in known):
            yield r, row


def serial_to_date(serial: float, *, date1904: bool = False) -> dt.date:
    """An Excel date serial as a date, with the 1900 system's phantom 1900-02-29 (serial 60)."""
    n = int(serial)
    if date1904:
        return dt.date(1904, 1, 1) + dt.timedelta(days=n)
    if n == 60:
        raise ValueError("serial 60 is 1900-02-29, a day that never existed")
    if n < 60:
        return dt.date(1899, 12, 31) + dt.timedelta(days=n)
    return dt.date(1899, 12, 30) + dt.timedelta(days=n)
