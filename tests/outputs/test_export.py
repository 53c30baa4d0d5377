"""It writes the ingest CSV CSC receives: the contract's columns, ISO dates, UTF-8, formulas
escaped, atomically, owner-only, recorded in its run, and refuses before `pacs2xnat build`.

One real dbt build (module-scoped) of a small warehouse whose descriptions and accession
numbers try to run as spreadsheet formulas.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from typer.testing import CliRunner

from connectors.app.cli import app
from connectors.outputs.export import HEADER, escape_cell, write_csv_atomic
from connectors.warehouse.dbt import build, copy_project
from connectors.warehouse.store import Warehouse

LOADED = dt.datetime(2026, 6, 1, 9, 0)
#: (MRN, NHS number, accession number, study date, description): all included by the rules.
STUDIES = (
    ("RA000001", "9434765919", "RJ0001", "20260102", '=HYPERLINK("http://x")'),
    ("RA000001", "9434765919", "@A7", "20260103", "@SUM(1+1)"),
    ("RA000002", "4010232137", "RJ0003", "20251231", "+cmd|' /C calc'!A0"),
    ("RA000002", "4010232137", "RJ0004", "20250704", "-2+3"),
    ("RA000003", "9876543210", "RJ0005", "20240229", 'CT Tête, "Cou" ; ok'),
    ("RA000003", "9876543210", "RJ0006", "20240301", "\tTabbed"),
)


def _uid(i: int) -> str:
    return f"1.2.826.0.1.3680043.10.1234.77.{i}"


def _load(warehouse: Warehouse, project: Path) -> None:
    with open(project / "seeds" / "study_description_rules.csv", "a", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        for *_, desc in STUDIES:
            w.writerow([desc, "include", "export test", "2026-01-01", "test"])
    patients = sorted({(m, n) for m, n, *_ in STUDIES})
    warehouse.append(
        "master_patients",
        [
            {
                "run_id": "import-1",
                "loaded_at": LOADED,
                "source_file": "master.csv",
                "source_sha256": "0" * 64,
                "source_row": i + 2,
                "mrn": mrn,
                "nhs_number": nhs,
                "status": "active",
            }
            for i, (mrn, nhs) in enumerate(patients)
        ],
    )
    warehouse.append(
        "pacs_studies",
        [
            {
                "run_id": "query-1",
                "loaded_at": LOADED,
                "query_id": f"q-{mrn}",
                "queried_at": LOADED,
                "query_mrn": mrn,
                "patient_id": mrn,
                "accession_number": acc,
                "study_date": date,
                "study_description": desc,
                "study_instance_uid": _uid(i),
                "modalities_in_study": "CT",
                "number_of_study_related_instances": "3",
            }
            for i, (mrn, _nhs, acc, date, desc) in enumerate(STUDIES)
        ],
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace (project copy + pacs2xnat.toml) whose warehouse dbt has built once."""
    ws = copy_project(tmp_path_factory.mktemp("export") / "ws")
    (ws / "pacs2xnat.toml").write_text('[warehouse]\npath = "warehouse/pacs2xnat.duckdb"\n')
    warehouse = Warehouse(ws / "warehouse" / "pacs2xnat.duckdb")
    warehouse.ensure()
    _load(warehouse, ws)
    build(project_dir=ws, warehouse_path=warehouse.path)
    return ws


@pytest.fixture
def run_export(project: Path, cli: CliRunner) -> Any:
    def _run(*args: str) -> Any:
        return cli.invoke(app, ["--config", str(project / "pacs2xnat.toml"), "export", *args])

    return _run


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def _last_run(project: Path) -> dict[str, Any]:
    db = project / "warehouse" / "pacs2xnat.duckdb"
    with duckdb.connect(str(db), read_only=True) as con:
        row = con.execute(
            "select run_id, command, outcome, summary from raw.runs "
            "where command = 'export' order by started_at desc limit 1"
        ).fetchone()
    assert row is not None
    return {"run_id": row[0], "command": row[1], "outcome": row[2], "summary": json.loads(row[3])}


@pytest.mark.slow
def test_it_writes_the_contract_header_and_iso_dates(
    run_export: Any, tmp_path: Path, project: Path
) -> None:
    """It writes the eight contract columns in order, UTF-8 with a BOM, CRLF, ISO dates."""
    out = tmp_path / "ingest.csv"
    res = run_export(str(out))
    assert res.exit_code == 0, res.output
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf" + ",".join(HEADER).encode() + b"\r\n")
    assert HEADER == (
        "Accession Number",
        "Patient ID",
        "Study Date",
        "Study Description",
        "Study UID",
        "NHS Number",
        "Subject",
        "Session",
    )
    rows = _read(out)
    assert len(rows) == len(STUDIES)
    by_uid = {r["Study UID"]: r for r in rows}
    for i, (mrn, nhs, _acc, date, _desc) in enumerate(STUDIES):
        row = by_uid[_uid(i)]
        assert row["Study Date"] == dt.datetime.strptime(date, "%Y%m%d").date().isoformat()
        assert row["Patient ID"] == mrn
        assert row["NHS Number"] == row["Subject"] == nhs


@pytest.mark.slow
def test_it_escapes_cells_a_spreadsheet_would_run(run_export: Any, tmp_path: Path) -> None:
    """It prefixes ' to cells starting with = + - @ or tab, and leaves other text as it is."""
    out = tmp_path / "ingest.csv"
    assert run_export(str(out)).exit_code == 0
    by_uid = {r["Study UID"]: r for r in _read(out)}
    for i, (_mrn, _nhs, acc, _date, desc) in enumerate(STUDIES):
        row = by_uid[_uid(i)]
        assert row["Study Description"] == escape_cell(desc)
        assert row["Accession Number"] == escape_cell(acc)
    assert by_uid[_uid(0)]["Study Description"] == '\'=HYPERLINK("http://x")'
    assert by_uid[_uid(1)]["Accession Number"] == "'@A7"
    assert by_uid[_uid(1)]["Session"] == "_A7"  # the XNAT label, nothing to escape
    assert by_uid[_uid(4)]["Study Description"] == 'CT Tête, "Cou" ; ok'
    for row in by_uid.values():
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r"))


@pytest.mark.slow
def test_it_records_its_run_and_writes_owner_only(run_export: Any, project: Path) -> None:
    """It writes to warehouse/exports/ingest_<date>_<run id>.csv, mode 0600, and records the
    rows, path and SHA-256 in its run."""
    res = run_export()
    assert res.exit_code == 0, res.output
    run = _last_run(project)
    assert run["outcome"] == "success"
    path = Path(run["summary"]["path"])
    today = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
    assert path == project / "warehouse" / "exports" / f"ingest_{today}_{run['run_id']}.csv"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    assert run["summary"]["rows"] == len(STUDIES)
    assert run["summary"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_it_writes_to_stdout_for_a_dash(run_export: Any) -> None:
    """It writes the same CSV to stdout, without a BOM, for `export -`."""
    res = run_export("-")
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.stdout, newline="")))
    assert list(rows[0]) == list(HEADER)
    assert len(rows) == len(STUDIES)
    assert not res.stdout.startswith("\ufeff")


def test_it_refuses_before_the_manifest_is_built(workspace: Path, cli: CliRunner) -> None:
    """It exits 2 telling the user to run `pacs2xnat build`, and writes no file."""
    out = workspace / "ingest.csv"
    res = cli.invoke(app, ["export", str(out)])
    assert res.exit_code == 2
    assert "has not been built" in res.output
    assert "run `pacs2xnat build` first" in res.output
    assert not out.exists()
    assert not (workspace / "warehouse" / "exports").exists()


def test_a_failure_midway_leaves_no_file(tmp_path: Path) -> None:
    """It leaves neither a half file nor a temporary file when writing fails midway, and an
    earlier export at the same path stays as it was."""

    def lines() -> Iterator[list[str]]:
        yield list(HEADER)
        yield ["A1", "M1", "2026-01-01", "CT", "1.2", "9434765919", "9434765919", "A1"]
        raise OSError("disk full")

    target = tmp_path / "new.csv"
    with pytest.raises(OSError, match="disk full"):
        write_csv_atomic(target, lines())
    assert list(tmp_path.iterdir()) == []

    earlier = tmp_path / "earlier.csv"
    write_csv_atomic(earlier, [list(HEADER)])
    before = earlier.read_bytes()
    with pytest.raises(OSError, match="disk full"):
        write_csv_atomic(earlier, lines())
    assert earlier.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["earlier.csv"]
