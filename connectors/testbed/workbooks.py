"""A synthetic cohort's master patient list (.xlsx or .csv) and rules workbook, as people keep them.

``write_master_list`` can add the damage Excel does to identifiers (deterministic by the cohort's
seed): NHS numbers as floats, in scientific notation or with spaces; MRNs that lost their leading
zeros (with the ``00000000`` number format that still shows them, in .xlsx); dates as serials or
UK text; stray and non-breaking spaces; blank and "Opted out" statuses; title rows above the
header. Every damaged value repairs back to the cohort's own value, which is what tests check.
Used by tests, benchmarks and the demo. Synthetic data only.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from openpyxl import Workbook

from connectors.testbed.cohort import Cohort, Patient

HEADER = ("MRN", "NHS Number", "Reference Date", "Status", "Patient Name", "Birth Date")
DAMAGE = (
    "nhs_float",  # 9434765919.0 (csv) / a float cell (xlsx)
    "nhs_scientific",  # 9.434765919E+09 (csv only: xlsx keeps the number)
    "nhs_spaces",  # 943 476 5919, 943-476-5919
    "mrn_float",  # 12345678.0
    "mrn_lost_zeros",  # 00123456 -> 123456 (xlsx: number with format 00000000)
    "serial_dates",  # 23743 instead of 1965-01-01
    "uk_dates",  # 01/01/1965, 01.01.1965, 01-01-1965
    "spaces",  # trailing spaces, non-breaking spaces
    "blank_status",  # active patients with an empty Status
    "opted_out",  # withdrawn written as "Opted out"
)
EPOCH_1900 = dt.date(1899, 12, 30)


def excel_serial(d: dt.date) -> int:
    """The 1900-system serial Excel stores for a date after 1900-02-28."""
    return (d - EPOCH_1900).days


def master_list_rows(cohort: Cohort) -> list[dict[str, Any]]:
    """The clean list: one dict per patient keyed by the canonical header."""
    return [
        {
            "MRN": p.mrn,
            "NHS Number": p.nhs_number,
            "Reference Date": p.reference_date,
            "Status": p.status,
            "Patient Name": p.list_name,
            "Birth Date": p.birth_date,
        }
        for p in cohort.patients
    ]


def _damage_kinds(damage: bool | Iterable[str]) -> set[str]:
    if damage is True:
        return set(DAMAGE)
    if damage is False:
        return set()
    kinds = set(damage)
    unknown = kinds - set(DAMAGE)
    if unknown:
        raise ValueError(f"unknown damage {sorted(unknown)} (known: {', '.join(DAMAGE)})")
    return kinds


def _damaged_row(
    p: Patient, kinds: set[str], rng: random.Random, fmt: str
) -> tuple[list[Any], dict[int, str]]:
    """A row's cell values (and number formats by column index) with some damage applied."""
    formats: dict[int, str] = {}
    mrn: Any = p.mrn
    nhs: Any = p.nhs_number
    ref: Any = p.reference_date
    birth: Any = p.birth_date
    status: Any = p.status
    hit = rng.random
    if nhs and "nhs_float" in kinds and hit() < 0.3:
        nhs = float(nhs) if fmt == "xlsx" else f"{nhs}.0"
    elif nhs and "nhs_scientific" in kinds and fmt == "csv" and hit() < 0.2:
        nhs = f"{nhs[0]}.{nhs[1:]}E+09"
    elif nhs and "nhs_spaces" in kinds and hit() < 0.3:
        sep = rng.choice(" -")
        nhs = f"{nhs[:3]}{sep}{nhs[3:6]}{sep}{nhs[6:]}"
    if mrn.isdigit() and mrn.startswith("0") and "mrn_lost_zeros" in kinds:
        if fmt == "xlsx":
            mrn, formats[0] = int(mrn), "0" * len(p.mrn)
        else:
            mrn = str(int(mrn))
    elif mrn.isdigit() and "mrn_float" in kinds and hit() < 0.5:
        mrn = float(mrn) if fmt == "xlsx" else f"{mrn}.0"
    if "serial_dates" in kinds and hit() < 0.4:
        birth = excel_serial(birth) if fmt == "xlsx" else str(excel_serial(birth))
    elif "uk_dates" in kinds and hit() < 0.4:
        birth = birth.strftime(rng.choice(("%d/%m/%Y", "%d.%m.%Y", "%d-%m-%Y")))
    if "uk_dates" in kinds and hit() < 0.3:
        ref = ref.strftime("%d/%m/%Y")
    if "spaces" in kinds and hit() < 0.3:
        mrn = f"{mrn} " if isinstance(mrn, str) else mrn
        if isinstance(nhs, str):
            nhs = f"\u00a0{nhs}"
    if status == "active" and "blank_status" in kinds and hit() < 0.5:
        status = None
    elif status == "withdrawn" and "opted_out" in kinds:
        status = "Opted out"
    return [mrn, nhs, ref, status, p.list_name, birth], formats


def write_master_list(
    cohort: Cohort,
    path: Path,
    *,
    damage: bool | Iterable[str] = False,
    title_rows: Sequence[str] = (),
    sheet: str = "Patients",
    encoding: str = "utf-8-sig",
    delimiter: str = ",",
    patients: Sequence[Patient] | None = None,
) -> Path:
    """The cohort's master list as .xlsx or .csv (by ``path``'s suffix), owner-only."""
    path = Path(path)
    fmt = "csv" if path.suffix.lower() == ".csv" else "xlsx"
    kinds = _damage_kinds(damage)
    rng = random.Random(cohort.seed * 7919 + 17)
    rows = [_damaged_row(p, kinds, rng, fmt) for p in (patients or cohort.patients)]
    if fmt == "csv":
        buf = io.StringIO(newline="")
        w = csv.writer(buf, delimiter=delimiter, lineterminator="\r\n")
        for t in title_rows:
            w.writerow([t])
        if title_rows:
            w.writerow([])
        w.writerow(HEADER)
        for values, _ in rows:
            w.writerow(["" if v is None else _csv_text(v) for v in values])
        _write_private(path, buf.getvalue().encode(encoding, errors="strict"))
        return path
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = sheet
    for t in title_rows:
        ws.append([t])
    if title_rows:
        ws.append([])
    ws.append(list(HEADER))
    r = len(title_rows) + (1 if title_rows else 0) + 1  # ws.max_row is O(cells): count instead
    for values, formats in rows:
        ws.append(values)
        r += 1
        for col, number_format in formats.items():
            ws.cell(row=r, column=col + 1).number_format = number_format
        for col in (2, 5):  # dates written as dates get a date format, as Excel would show them
            if isinstance(values[col], dt.date):
                ws.cell(row=r, column=col + 1).number_format = "dd/mm/yyyy"
    _save_private(wb, path)
    return path


def _csv_text(v: Any) -> str:
    if isinstance(v, dt.date):
        return v.isoformat()
    return str(v)


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_bytes(data)
    path.chmod(0o600)


def _save_private(wb: Workbook, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    wb.save(path)
    path.chmod(0o600)


def write_rules_workbook(
    path: Path,
    include: Iterable[str | tuple[str, str]],
    exclude: Iterable[str | tuple[str, str]],
    *,
    sheet_names: tuple[str, str] = ("INCLUDE", "EXCLUDE"),
    title_rows: Sequence[str] = (),
) -> Path:
    """The team's workbook: sheets INCLUDE and EXCLUDE, columns Study Description and Note."""
    wb = Workbook()
    first = wb.active
    if first is not None:
        wb.remove(first)
    for name, items in zip(sheet_names, (include, exclude), strict=True):
        ws = wb.create_sheet(name)
        for t in title_rows:
            ws.append([t])
        ws.append(["Study Description", "Note"])
        r = len(title_rows) + 1
        for item in items:
            desc, note = (item, "") if isinstance(item, str) else item
            ws.append([None, note or None])
            r += 1
            cell = ws.cell(row=r, column=1)
            cell.value = desc
            cell.data_type = "s"  # text even when it starts with "=": the workbook as typed
    _save_private(wb, Path(path))
    return Path(path)


def rules_from_seed(seed: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(include, exclude) lists of (description, note) from a rules seed CSV."""
    include: list[tuple[str, str]] = []
    exclude: list[tuple[str, str]] = []
    with open(seed, encoding="utf-8", newline="") as f:
        for rec in csv.DictReader(f):
            target = include if rec["decision"] == "include" else exclude
            target.append((rec["description"], rec.get("note") or ""))
    return include, exclude


#: Descriptions the synthetic cohort uses that the starter seed leaves undecided (triage).
UNDECIDED = ("CT Neck Chest Recon", "MR Pharynx Dynamic")


def write_demo_workbooks(cohort: Cohort, folder: Path, seed: Path) -> dict[str, Path]:
    """The demo's two inputs: a damaged master list and the team's rules workbook.

    The workbook holds the seed's rules with one description moved to the other sheet (so
    ``rules import`` reports a conflict) and leaves the cohort's ``UNDECIDED`` descriptions out
    (so ``study_triage`` has something to show).
    """
    folder = Path(folder)
    master = write_master_list(
        cohort, folder / "master_patient_list.xlsx", damage=True, title_rows=["HNC cohort"]
    )
    include, exclude = rules_from_seed(seed)
    include = [r for r in include if r[0] not in UNDECIDED]
    exclude = [r for r in exclude if r[0] not in UNDECIDED]
    if include:
        exclude.append((include[-1][0], "moved by the demo: on both lists now"))
    rules = write_rules_workbook(folder / "study_descriptions.xlsx", include, exclude)
    return {"master_list": master, "rules_workbook": rules}
