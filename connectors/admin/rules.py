"""The INCLUDE/EXCLUDE workbook <-> ``seeds/study_description_rules.csv`` (the rules seed).

Import merges and never silently drops a decision: a description already decided keeps its row
(and who decided it, and when); a new one is added with today's date and ``decided_by``; one on
both lists is kept twice and reported as a conflict (the models then mark its studies
``conflict`` for triage); a seed row missing from the workbook is kept and reported. Descriptions
are compared by ``normalise_description``, the Python twin of ``macros/normalise_description.sql``.
The seed is written atomically (temp file + ``os.replace``), sorted by decision then description.
"""

from __future__ import annotations

import datetime as dt
import getpass
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors import console
from connectors.admin.rules_seed import (
    Rule,
    normalise_description,
    read_seed,
    render_seed,
    seed_path,
)
from connectors.admin.sheets import (
    Sheet,
    cell_at,
    clean_text,
    collapse_spaces,
    data_rows,
    find_header,
    header_key,
    headers_seen,
    read_book,
)
from connectors.errors import InputError
from connectors.files import atomic_write, sha256_file
from connectors.warehouse.runs import RunContext

logger = logging.getLogger(__name__)

SHEETS = {"include": "INCLUDE", "exclude": "EXCLUDE"}
DESCRIPTION, NOTE = header_key("Study Description"), header_key("Note")
WB_FIELDS = {DESCRIPTION: "Study Description", NOTE: "Note"}
SHOW = 10


@dataclass(frozen=True)
class Entry:
    """One description on one sheet of the workbook."""

    description: str
    decision: str
    note: str
    sheet: str
    row: int

    @property
    def key(self) -> tuple[str, str]:
        return (normalise_description(self.description) or "", self.decision)


# --------------------------------------------------------------------------- the workbook


def read_rules_workbook(path: Path) -> list[Entry]:
    """Every description on the INCLUDE and EXCLUDE sheets, or an ``InputError`` saying why not."""
    book = read_book(path, allow_csv=False)
    by_name = {clean_text(s.name or "").upper(): s for s in book.sheets}
    entries: list[Entry] = []
    for decision, wanted in SHEETS.items():
        sheet = by_name.get(wanted)
        if sheet is None:
            names = ", ".join(repr(s.name) for s in book.sheets)
            raise InputError(
                f"no sheet named {wanted} (the workbook has {names}); the rules workbook needs "
                "the sheets INCLUDE and EXCLUDE",
                file=book.path,
            )
        entries.extend(_sheet_entries(book.path, sheet, decision))
    if not entries:
        raise InputError(
            "both sheets INCLUDE and EXCLUDE are empty: nothing to import", file=book.path
        )
    return entries


def _sheet_entries(file: Path, sheet: Sheet, decision: str) -> list[Entry]:
    if sheet.is_empty():
        return []
    header = find_header(sheet, WB_FIELDS, DESCRIPTION, file=file)
    if header is None:
        seen = ", ".join(repr(h) for h in headers_seen(sheet)) or "nothing"
        raise InputError(
            f"no 'Study Description' column: none of the first 10 rows has that header "
            f"(found {seen})",
            file=file,
            sheet=sheet.name,
        )
    out = []
    for r, cells in data_rows(sheet, header):
        values: dict[str, str] = {}
        for key, idx in header.columns.items():
            cell = cell_at(cells, idx)
            if cell.is_formula:
                raise InputError(
                    f"a formula ({str(cell.value)[:40]}) where text belongs; paste the values "
                    "only (Paste Special > Values) and import again",
                    file=file,
                    sheet=sheet.name,
                    row=r,
                    column=header.titles[key],
                )
            values[key] = "" if cell.is_blank else collapse_spaces(str(cell.value))
        text = values.get(DESCRIPTION, "")
        if not text:
            continue  # a note without a description: nothing to decide
        if normalise_description(text) is None:
            raise InputError(
                f"the description {text!r} has no letters or digits to match on",
                file=file,
                sheet=sheet.name,
                row=r,
                column=header.titles[DESCRIPTION],
            )
        out.append(Entry(text, decision, values.get(NOTE, ""), sheet.name or "", r))
    return out


# --------------------------------------------------------------------------- merge


@dataclass
class Merge:
    rules: list[Rule]
    added: list[Rule]
    kept: int
    conflicts: list[str]
    not_in_workbook: list[Rule]
    duplicates: int


def merge_rules(existing: list[Rule], entries: list[Entry], today: str, who: str) -> Merge:
    """The seed after taking in the workbook: additive, and every disagreement reported."""
    have = {r.key for r in existing}
    rules = list(existing)
    added: list[Rule] = []
    seen: set[tuple[str, str]] = set()
    kept = duplicates = 0
    for e in entries:
        if e.key in seen:
            duplicates += 1
            continue
        seen.add(e.key)
        if e.key in have:
            kept += 1
            continue
        new = Rule(e.description, e.decision, e.note, today, who)
        rules.append(new)
        added.append(new)
    decisions: dict[str, set[str]] = {}
    spelling: dict[str, str] = {}
    for r in rules:
        norm = r.key[0]
        decisions.setdefault(norm, set()).add(r.decision)
        spelling.setdefault(norm, r.description)
    conflicts = sorted(spelling[n] for n, d in decisions.items() if len(d) > 1)
    missing = [r for r in existing if r.key not in seen]
    return Merge(rules, added, kept, conflicts, missing, duplicates)


def import_rules_workbook(rc: RunContext, file: Path, decided_by: str | None) -> dict[str, Any]:
    """``pacs2xnat rules import FILE.xlsx``: merge the workbook into the rules seed."""
    path = Path(file)
    if path.is_file():
        rc.add_input(path)
    entries = read_rules_workbook(path)
    seed = seed_path(rc.project_dir)
    existing = read_seed(seed)
    who = decided_by or _user()
    result = merge_rules(existing, entries, dt.date.today().isoformat(), who)
    data = render_seed(result.rules)
    changed = not seed.is_file() or seed.read_bytes() != data
    if changed:
        mode = seed.stat().st_mode & 0o777 if seed.is_file() else 0o644
        try:
            atomic_write(seed, lambda f: f.write(data), binary=True, mode=mode)
        except OSError as e:
            raise InputError(
                f"cannot write the rules seed ({e.strerror or e})", file=seed
            ) from None
    summary = {
        "seed": str(seed),
        "seed_sha256": sha256_file(seed),
        "rules": len(result.rules),
        "added": len(result.added),
        "kept": result.kept,
        "duplicates_in_workbook": result.duplicates,
        "conflicts": result.conflicts,
        "kept_not_in_workbook": [f"{r.description} ({r.decision})" for r in result.not_in_workbook],
    }
    _say_import(summary, result, changed)
    logger.info(
        "rules import: %d added, %d kept, %d conflicts",
        len(result.added),
        result.kept,
        len(result.conflicts),
    )
    return summary


def _say_import(summary: dict[str, Any], result: Merge, changed: bool) -> None:
    console.say(
        f"Rules: {summary['added']} added, {summary['kept']} already decided (kept as they were), "
        f"{len(result.conflicts)} conflicts, {len(result.not_in_workbook)} kept though not in the "
        f"workbook; {summary['rules']} rules in {summary['seed']}"
        + ("" if changed else " (unchanged)")
    )
    for r in result.added[:SHOW]:
        console.say(f"  added ({r.decision}): {r.description}")
    for text in result.conflicts[:SHOW]:
        console.say(f"  conflict (on both INCLUDE and EXCLUDE, studies go to triage): {text}")
    for r in result.not_in_workbook[:SHOW]:
        console.say(f"  kept, not in the workbook ({r.decision}): {r.description}")
    if result.duplicates:
        console.say(f"  {result.duplicates} repeated descriptions in the workbook counted once")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


# --------------------------------------------------------------------------- export


def export_rules_workbook(rc: RunContext, file: Path) -> dict[str, Any]:
    """``pacs2xnat rules export FILE.xlsx``: the seed as the INCLUDE/EXCLUDE workbook."""
    from connectors.admin.rules_workbook import write_rules_workbook

    path = Path(file)
    if path.suffix.lower() not in (".xlsx", ".xlsm"):
        raise InputError(
            f"the rules workbook must be an .xlsx file (got {path.suffix or 'no extension'!r})",
            file=path,
        )
    rules = read_seed(seed_path(rc.project_dir))
    try:
        counts = write_rules_workbook(path, rules)
    except OSError as e:
        raise InputError(f"cannot write the workbook here ({e.strerror or e})", file=path) from None
    summary = {"file": str(path.resolve()), "sha256": sha256_file(path), **counts}
    console.say(
        f"Wrote {path} ({counts['include']} INCLUDE, {counts['exclude']} EXCLUDE descriptions)."
    )
    return summary
