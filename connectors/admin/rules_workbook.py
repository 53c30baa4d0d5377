"""Writing the rules seed as the INCLUDE/EXCLUDE workbook the team keeps (``rules export``).

Each sheet: Study Description, Note, Decided On, Decided By; bold frozen header, an autofilter,
column widths that fit the text. A description that starts with ``=`` is written as text, never as
a formula. The file is owner-only and appears whole or not at all (temp file + ``os.replace``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from openpyxl import Workbook
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter

from connectors.admin.rules_seed import Rule
from connectors.files import atomic_write

EXPORT_HEADER = ("Study Description", "Note", "Decided On", "Decided By")
MIN_WIDTH, MAX_WIDTH = 10, 80


def set_text(cell: Any, value: str) -> None:
    """A string cell, even when it starts with ``=`` (openpyxl would otherwise store a formula)."""
    cell.value = value
    cell.data_type = "s"


def fill_sheet(ws: Any, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Header in bold and frozen, the rows, an autofilter and widths that fit."""
    widths = [len(h) for h in header]
    for c, title in enumerate(header, start=1):
        cell = ws.cell(row=1, column=c)
        set_text(cell, title)
        cell.font = Font(bold=True)
    r = 1
    for r, values in enumerate(rows, start=2):
        for c, value in enumerate(values, start=1):
            cell = ws.cell(row=r, column=c)
            if isinstance(value, dt.date):
                cell.value = value
                cell.number_format = "yyyy-mm-dd"
                shown = 10
            else:
                text = "" if value is None else str(value)
                if text:
                    set_text(cell, text)
                shown = len(text)
            widths[c - 1] = max(widths[c - 1], shown)
    ws.freeze_panes = "A2"
    ws.auto_filter.ref = f"A1:{get_column_letter(len(header))}{max(r, 1)}"
    for c, w in enumerate(widths, start=1):
        ws.column_dimensions[get_column_letter(c)].width = min(MAX_WIDTH, max(MIN_WIDTH, w + 2))


def _date(text: str) -> dt.date | str:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return text


def write_rules_workbook(path: Path, rules: Sequence[Rule]) -> dict[str, int]:
    wb = Workbook()
    first = wb.active
    if first is not None:
        wb.remove(first)
    counts: dict[str, int] = {}
    for decision, title in (("include", "INCLUDE"), ("exclude", "EXCLUDE")):
        ws = wb.create_sheet(title)
        chosen = sorted(
            (r for r in rules if r.decision == decision), key=lambda r: r.description.casefold()
        )
        fill_sheet(
            ws,
            EXPORT_HEADER,
            ((r.description, r.note, _date(r.decided_on), r.decided_by) for r in chosen),
        )
        counts[decision] = len(chosen)
    atomic_write(Path(path), wb.save, binary=True)
    return counts
