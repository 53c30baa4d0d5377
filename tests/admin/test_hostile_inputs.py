"""It refuses what cannot be repaired, with the exact message, writing nothing; it repairs the rest.

Every bad file is made in the test (openpyxl, or raw bytes for what is not a workbook), given to
the real CLI in a workspace, and must end with exit 2, the exact ``Error: ...`` line naming file
(sheet), row and column, no new row in ``raw.master_patients`` and the rules seed byte for byte
as it was. The second table gives ugly-but-repairable cells and the value that must be stored.
"""

from __future__ import annotations

import datetime as dt
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest
from openpyxl import Workbook
from openpyxl.utils.datetime import CALENDAR_MAC_1904
from typer.testing import CliRunner

from connectors.admin.master_list import read_master_list
from connectors.admin.sheets import CFB_MAGIC
from connectors.app.cli import app
from connectors.testbed.workbooks import write_rules_workbook

HEADER = ["MRN", "NHS Number", "Reference Date", "Status", "Patient Name", "Birth Date"]
GOOD = ["RA000001", "9434765919", dt.date(2025, 3, 1), "active", "Smith, John", dt.date(1960, 5, 4)]
SEED = Path("seeds") / "study_description_rules.csv"


def xlsx(path: Path, rows: list[list[Any]], sheet: str = "Patients", **kw: Any) -> Path:
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = sheet
    for r in rows:
        ws.append(r)
    if "epoch" in kw:
        wb.epoch = kw["epoch"]
    for (r, c), fmt in kw.get("formats", {}).items():
        ws.cell(row=r, column=c).number_format = fmt
    wb.save(path)
    return path


def compound_file(path: Path, *streams: str) -> Path:
    """An OLE compound file's signature and directory names, as .xls and encrypted .xlsx have."""
    body = b"".join(s.encode("utf-16-le") + b"\x00" * 16 for s in streams)
    path.write_bytes(CFB_MAGIC + b"\x00" * 504 + body + b"\x00" * 512)
    return path


def zip_without_workbook(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("notes.txt", "not a workbook")
    return path


def patients_case(build: Callable[[Path], Path]) -> Callable[[Path], list[str]]:
    return lambda ws: ["patients", "import", build(ws).name]


def rules_case(build: Callable[[Path], Path]) -> Callable[[Path], list[str]]:
    return lambda ws: ["rules", "import", build(ws).name]


def with_row(row: list[Any], at: int = 3) -> Callable[[Path], Path]:
    """A list whose data row number ``at`` is ``row`` (the others are good)."""
    rows = [HEADER] + [[f"RA{i:06d}", *GOOD[1:]] for i in range(1, at - 1)] + [row]
    return lambda ws: xlsx(ws / "list.xlsx", rows)


PAT = "list.xlsx, sheet Patients"
HOSTILE: list[tuple[str, Callable[[Path], list[str]], str]] = [
    (
        "unknown extension",
        patients_case(lambda ws: _write(ws / "list.txt", b"MRN,NHS Number\nRA1,9434765919\n")),
        "list.txt: unsupported file type '.txt'; give an .xlsx or .csv file",
    ),
    (
        "a PDF renamed .xlsx",
        patients_case(lambda ws: _write(ws / "list.xlsx", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj")),
        "list.xlsx: not an Excel workbook: it is a PDF",
    ),
    (
        "text renamed .xlsx",
        patients_case(lambda ws: _write(ws / "list.xlsx", b"MRN,NHS Number\nRA1,943\n")),
        "list.xlsx: not an Excel workbook: it is plain text",
    ),
    (
        "a zip that holds no workbook",
        patients_case(lambda ws: zip_without_workbook(ws / "list.xlsx")),
        "list.xlsx: not an Excel workbook: it is a zip file without a workbook inside",
    ),
    (
        "a legacy .xls",
        patients_case(lambda ws: compound_file(ws / "list.xls", "Workbook")),
        "list.xls: a legacy Excel 97-2003 .xls workbook; open it in Excel, save it as Excel "
        "Workbook (.xlsx) and import that",
    ),
    (
        "a password-protected workbook",
        patients_case(
            lambda ws: compound_file(ws / "list.xlsx", "EncryptionInfo", "EncryptedPackage")
        ),
        "list.xlsx: the workbook is password-protected (encrypted); open it in Excel, remove the "
        "password (File > Info > Protect Workbook) and save a copy to import",
    ),
    (
        "an empty file",
        patients_case(lambda ws: _write(ws / "list.csv", b"")),
        "list.csv: the file is empty (0 bytes)",
    ),
    (
        "a binary file named .csv",
        patients_case(lambda ws: _write(ws / "list.csv", b"MRN\x00\x01\x02\x03")),
        "list.csv: not a CSV text file: it is binary data",
    ),
    (
        "a workbook without cells",
        patients_case(lambda ws: xlsx(ws / "list.xlsx", [])),
        "list.xlsx: no data: the workbook has no cells",
    ),
    (
        "a header and no rows",
        patients_case(lambda ws: xlsx(ws / "list.xlsx", [HEADER, [None, "  "]])),
        f"{PAT}, row 1: no patient rows below the header",
    ),
    (
        "no MRN column",
        patients_case(
            lambda ws: xlsx(ws / "list.xlsx", [["Hospital No", "NHS Number"], ["RA1", "943"]])
        ),
        f"{PAT}: no MRN column: none of the first 10 rows has a header 'MRN' "
        "(found 'Hospital No', 'NHS Number')",
    ),
    (
        "a duplicate header",
        patients_case(
            lambda ws: xlsx(
                ws / "list.xlsx", [["MRN", "NHS Number", "nhs_number"], ["RA1", "1", "2"]]
            )
        ),
        f"{PAT}, row 1, column 'nhs_number': the header 'NHS Number' appears twice "
        "(columns B and C); keep one",
    ),
    (
        "a row without an MRN",
        patients_case(with_row([None, "9434765919", None, "active", "Doe, Jane", None], at=4)),
        f"{PAT}, row 4, column 'MRN': no MRN on this row (every patient needs one; delete the "
        "row if it is empty)",
    ),
    (
        "a date that cannot be read",
        patients_case(with_row(["RA9", "9434765919", "next Tuesday", "active", "X, Y", None])),
        f"{PAT}, row 3, column 'Reference Date': cannot read 'next Tuesday' as a date; use "
        "YYYY-MM-DD or DD/MM/YYYY (day first)",
    ),
    (
        "a date that does not exist",
        patients_case(with_row(["RA9", "9434765919", None, "active", "X, Y", "31/02/1965"])),
        f"{PAT}, row 3, column 'Birth Date': '31/02/1965' is not a real date; use YYYY-MM-DD "
        "or DD/MM/YYYY (day first)",
    ),
    (
        "Excel's phantom 1900-02-29",
        patients_case(with_row(["RA9", "9434765919", None, "active", "X, Y", 60])),
        f"{PAT}, row 3, column 'Birth Date': Excel serial date 60 is 1900-02-29, a day that "
        "never existed (Excel's 1900 leap-year bug); type the real date",
    ),
    (
        "an unknown status",
        patients_case(with_row(["RA9", "9434765919", None, "Deceased", "X, Y", None], at=5)),
        f"{PAT}, row 5, column 'Status': unknown status 'Deceased'; use active or withdrawn "
        "(blank means active, 'opted out' means withdrawn)",
    ),
    (
        "a formula where the MRN belongs",
        patients_case(with_row(['=CONCATENATE("RA", "000009")', "9434765919"], at=3)),
        f'{PAT}, row 3, column \'MRN\': a formula (=CONCATENATE("RA", "000009")) where a '
        "value belongs; copy the column and Paste Special > Values, then import again",
    ),
    (
        "an NHS number cut short by scientific notation",
        patients_case(
            lambda ws: _write(
                ws / "list.csv", b"MRN,NHS Number\r\nRA1,9434765919\r\nRA2,9.43E+09\r\n"
            )
        ),
        "list.csv, row 3, column 'NHS Number': '9.43E+09' lost digits to Excel's scientific "
        "notation; format the column as Text (or Number with 0 decimals) in the original "
        "workbook and save it again",
    ),
    (
        "an MRN cut short by scientific notation",
        patients_case(lambda ws: _write(ws / "list.csv", b"Status;MRN\r\n;1.23457E+11\r\n")),
        "list.csv, row 2, column 'MRN': '1.23457E+11' lost digits to Excel's scientific "
        "notation; format the column as Text (or Number with 0 decimals) in the original "
        "workbook and save it again",
    ),
    (
        "a master list that does not exist",
        lambda ws: ["patients", "import", "missing.xlsx"],
        "missing.xlsx: file not found",
    ),
    (
        "rules as CSV",
        rules_case(lambda ws: _write(ws / "rules.csv", b"Study Description\nCT Neck\n")),
        "rules.csv: unsupported file type '.csv'; give an .xlsx workbook",
    ),
    (
        "rules in a PDF renamed .xlsx",
        rules_case(lambda ws: _write(ws / "rules.xlsx", b"%PDF-1.4\n")),
        "rules.xlsx: not an Excel workbook: it is a PDF",
    ),
    (
        "rules without an EXCLUDE sheet",
        rules_case(
            lambda ws: xlsx(ws / "rules.xlsx", [["Study Description"], ["CT Neck"]], "Include")
        ),
        "rules.xlsx: no sheet named EXCLUDE (the workbook has 'Include'); the rules workbook "
        "needs the sheets INCLUDE and EXCLUDE",
    ),
    (
        "rules without a Study Description column",
        rules_case(
            lambda ws: (
                write_rules_workbook(ws / "rules.xlsx", ["CT Neck"], [], title_rows=())
                and _retitle(ws / "rules.xlsx", "INCLUDE", "Description")
            )
        ),
        "rules.xlsx, sheet INCLUDE: no 'Study Description' column: none of the first 10 rows "
        "has that header (found 'Description', 'Note')",
    ),
    (
        "rules with a formula",
        rules_case(lambda ws: _rules_with_formula(ws / "rules.xlsx")),
        "rules.xlsx, sheet EXCLUDE, row 3, column 'Study Description': a formula (=UPPER(A2)) "
        "where text belongs; paste the values only (Paste Special > Values) and import again",
    ),
    (
        "rules with both sheets empty",
        rules_case(lambda ws: write_rules_workbook(ws / "rules.xlsx", [], [])),
        "rules.xlsx: both sheets INCLUDE and EXCLUDE are empty: nothing to import",
    ),
    (
        "a rule that is only punctuation",
        rules_case(lambda ws: write_rules_workbook(ws / "rules.xlsx", ["CT Neck", "--"], [])),
        "rules.xlsx, sheet INCLUDE, row 3, column 'Study Description': the description '--' has "
        "no letters or digits to match on",
    ),
]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _retitle(path: Path, sheet: str, title: str) -> Path:
    from openpyxl import load_workbook

    wb = load_workbook(path)
    wb[sheet]["A1"] = title
    wb.save(path)
    return path


def _rules_with_formula(path: Path) -> Path:
    write_rules_workbook(path, ["CT Neck"], ["MRI Knee"])
    from openpyxl import load_workbook

    wb = load_workbook(path)
    wb["EXCLUDE"]["A3"] = "=UPPER(A2)"
    wb.save(path)
    return path


def _patient_rows(ws: Path) -> int:
    db = ws / "warehouse" / "pacs2xnat.duckdb"
    with duckdb.connect(str(db), read_only=True) as con:
        row = con.execute("select count(*) from raw.master_patients").fetchone()
        return int(row[0]) if row else 0


@pytest.mark.parametrize(
    ("build", "message"), [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE]
)
def test_hostile_input_is_refused_with_the_exact_message_and_nothing_written(
    workspace: Path, cli: CliRunner, build: Callable[[Path], list[str]], message: str
) -> None:
    """It exits 2 with the exact message, adds no patient row and leaves the seed untouched."""
    good = xlsx(workspace / "good.xlsx", [HEADER, GOOD])
    first = cli.invoke(app, ["patients", "import", good.name])
    assert first.exit_code == 0, first.output
    before_rows = _patient_rows(workspace)
    seed_before = (workspace / SEED).read_bytes()

    res = cli.invoke(app, build(workspace))

    assert res.exit_code == 2, res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("Error: ")]
    assert errors == [f"Error: {message}"]
    assert _patient_rows(workspace) == before_rows
    assert (workspace / SEED).read_bytes() == seed_before
    assert not [p for p in (workspace / "seeds").iterdir() if p.name.startswith(".")]


def test_the_table_has_at_least_fifteen_distinct_bad_inputs() -> None:
    """It keeps the hostile table at the size the issue asks for, with no repeated message."""
    assert len({m for _, _, m in HOSTILE}) == len(HOSTILE) >= 15
    assert sum(1 for _, _, m in HOSTILE if m.startswith("rules")) >= 5


# --------------------------------------------------------------------------- repairable

REPAIRABLE: list[tuple[str, str, Any, Any, str | None]] = [
    # (case, column, cell as written, value stored, repair kind or None)
    ("NHS number as a float cell", "NHS Number", 9434765919.0, "9434765919", None),
    (
        "NHS number as float text",
        "NHS Number",
        "9434765919.0",
        "9434765919",
        "nhs_number_as_number",
    ),
    (
        "NHS number in full scientific notation",
        "NHS Number",
        "9.434765919E+09",
        "9434765919",
        "nhs_number_as_number",
    ),
    ("NHS number with spaces", "NHS Number", "943 476 5919", "9434765919", "nhs_number_separators"),
    ("NHS number with dashes", "NHS Number", "943-476-5919", "9434765919", "nhs_number_separators"),
    ("NHS number with NBSP", "NHS Number", "\u00a09434765919 ", "9434765919", "spaces"),
    ("invalid NHS number is loaded", "NHS Number", "1234567890", "1234567890", None),
    ("MRN as a float cell", "MRN", 1234.5e3, "1234500", None),
    ("MRN as float text", "MRN", "1234.0", "1234", "mrn_as_number"),
    (
        "MRN with trailing and invisible spaces",
        "MRN",
        " RA001234\u00a0\u200b",
        "RA001234",
        "spaces",
    ),
    ("serial date", "Birth Date", 23743, dt.date(1965, 1, 1), "serial_date"),
    ("serial date before the phantom day", "Birth Date", 59, dt.date(1900, 2, 28), "serial_date"),
    ("serial date after the phantom day", "Birth Date", 61, dt.date(1900, 3, 1), "serial_date"),
    ("serial date as text", "Birth Date", "25569", dt.date(1970, 1, 1), "serial_date"),
    ("UK date with slashes", "Birth Date", "01/02/1965", dt.date(1965, 2, 1), "text_date"),
    ("UK date with dots", "Birth Date", "1.2.1965", dt.date(1965, 2, 1), "text_date"),
    ("UK date with dashes", "Reference Date", "28-02-2025", dt.date(2025, 2, 28), "text_date"),
    (
        "ISO date text with a time",
        "Reference Date",
        "2025-02-28 00:00:00",
        dt.date(2025, 2, 28),
        None,
    ),
    (
        "a date-time cell",
        "Reference Date",
        dt.datetime(2025, 2, 28, 9, 30),
        dt.date(2025, 2, 28),
        None,
    ),
    ("blank status", "Status", None, "active", "blank_status"),
    ("status in capitals with spaces", "Status", "  ACTIVE ", "active", "spaces"),
    ("opted out", "Status", "Opted out", "withdrawn", None),
    ("opt-out", "Status", "OPT-OUT", "withdrawn", None),
    ("withdrawn", "Status", "Withdrawn", "withdrawn", None),
]
FIELD = {
    "MRN": "mrn",
    "NHS Number": "nhs_number",
    "Reference Date": "reference_date",
    "Status": "status",
    "Birth Date": "birth_date",
}


@pytest.mark.parametrize(
    ("column", "written", "stored", "kind"),
    [c[1:] for c in REPAIRABLE],
    ids=[c[0] for c in REPAIRABLE],
)
def test_ugly_but_repairable_cell_is_stored_repaired(
    tmp_path: Path, column: str, written: Any, stored: Any, kind: str | None
) -> None:
    """It stores the repaired value and counts the repair by kind."""
    row = list(GOOD)
    row[HEADER.index(column)] = written
    path = xlsx(tmp_path / "list.xlsx", [HEADER, row])
    master = read_master_list(path)
    assert master.rows[0].values[FIELD[column]] == stored
    if kind is None:
        assert master.kind_counts() == {}
    else:
        assert kind in master.kind_counts()


def test_leading_zeros_come_back_from_the_cell_format_or_the_config(tmp_path: Path) -> None:
    """It pads a numeric MRN to the width its number format shows, or to [patients] mrn_width."""
    rows = [HEADER, [123456, *GOOD[1:]], ["00042", *GOOD[1:]], [77, *GOOD[1:]]]
    path = xlsx(tmp_path / "list.xlsx", rows, formats={(2, 1): "00000000"})
    assert [r.values["mrn"] for r in read_master_list(path).rows] == ["00123456", "00042", "77"]
    padded = read_master_list(path, mrn_width=6)
    assert [r.values["mrn"] for r in padded.rows] == ["00123456", "000042", "000077"]
    assert padded.rows[0].repairs == ["MRN 123456 -> 00123456"]


def test_1904_date_system_serials(tmp_path: Path) -> None:
    """It reads a serial in a workbook saved with the 1904 date system (old Mac Excel)."""
    row = list(GOOD)
    row[5] = 0
    path = xlsx(tmp_path / "list.xlsx", [HEADER, row], epoch=CALENDAR_MAC_1904)
    assert read_master_list(path).rows[0].values["birth_date"] == dt.date(1904, 1, 1)


def test_headers_below_titles_in_odd_spellings_on_the_second_sheet(tmp_path: Path) -> None:
    """It finds ' mrn', 'NHS_number', 'BIRTH DATE' on row 4 of the sheet that has them."""
    wb = Workbook()
    notes = wb.active
    assert notes is not None
    notes.title = "Read me"
    notes.append(["This list is confidential"])
    ws = wb.create_sheet("Cohort")
    ws.append(["Head and neck cohort"])
    ws.append(["Updated quarterly"])
    ws.append([])
    ws.append([" mrn", "NHS_number", "BIRTH DATE", "Consultant"])
    ws.append(["RA1", "9434765919", "04/05/1960", "Dr Who"])
    ws.append([])
    ws.append(["RA2", None, None, None])
    ws.append([None, None, None, "Total: 2 patients"])
    wb.save(tmp_path / "list.xlsx")
    master = read_master_list(tmp_path / "list.xlsx")
    assert (master.sheet, master.header_row) == ("Cohort", 4)
    assert [(r.source_row, r.values["mrn"]) for r in master.rows] == [(5, "RA1"), (7, "RA2")]
    assert master.rows[0].values["birth_date"] == dt.date(1960, 5, 4)
    assert master.rows[1].values["status"] == "active"


def test_csv_text_wrappers_and_exact_scientific_notation(tmp_path: Path) -> None:
    """It unwraps ="00123" (Excel's keep-my-zeros CSV trick) and exact scientific numbers."""
    path = tmp_path / "list.csv"
    path.write_text(
        'MRN,NHS Number\r\n="00123","=""9434765919"""\r\n1.234567E+06,9.434765919e9\r\n',
        encoding="utf-8",
    )
    master = read_master_list(path)
    assert [(r.values["mrn"], r.values["nhs_number"]) for r in master.rows] == [
        ("00123", "9434765919"),
        ("1234567", "9434765919"),
    ]
    assert master.kind_counts() == {
        "nhs_number_as_number": 1,
        "mrn_as_number": 1,
        "csv_text_formula": 1,
    }


def test_excel_unicode_text_export_is_read(tmp_path: Path) -> None:
    """It reads Excel's UTF-16 "Unicode Text" (tab-separated, with a BOM) saved as .csv."""
    path = tmp_path / "list.csv"
    path.write_bytes("MRN\tPatient Name\r\nRA1\tNí Bhriain, Zoë\r\n".encode("utf-16"))
    master = read_master_list(path)
    assert [(r.values["mrn"], r.values["patient_name"]) for r in master.rows] == [
        ("RA1", "Ní Bhriain, Zoë")
    ]


def test_refusal_end_to_end_in_a_subprocess(workspace: Path) -> None:
    """It exits 2 from the real process with the message on stderr and nothing on stdout."""
    import subprocess
    import sys

    (workspace / "list.xlsx").write_bytes(b"%PDF-1.7\n")
    res = subprocess.run(
        [sys.executable, "-m", "connectors.app.cli", "--json", "patients", "import", "list.xlsx"],
        cwd=workspace,
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 2
    assert res.stdout == ""
    assert res.stderr.strip() == "Error: list.xlsx: not an Excel workbook: it is a PDF"
