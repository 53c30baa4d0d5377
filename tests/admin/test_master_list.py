"""It imports a synthetic cohort's master list, damaged the way Excel damages it, as the cohort was.

Real files (openpyxl .xlsx, CSV in the encodings Excel writes), the real CLI, a real DuckDB file,
and one real ``dbt build`` to show the staging model reads what the import wrote.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb
import pytest
from typer.testing import CliRunner

from connectors.app.cli import app
from connectors.files import sha256_file
from connectors.testbed.cohort import Cohort, make_cohort
from connectors.testbed.workbooks import write_master_list, write_rules_workbook

AS_OF = dt.date(2026, 11, 1)
DB = Path("warehouse") / "pacs2xnat.duckdb"


@pytest.fixture(scope="module")
def cohort() -> Cohort:
    return make_cohort(40, seed=7, as_of=AS_OF)


def expected(cohort: Cohort) -> dict[str, tuple[Any, ...]]:
    return {
        p.mrn: (p.nhs_number, p.reference_date, p.status, p.list_name, p.birth_date)
        for p in cohort.patients
    }


def stored(ws: Path, run_id: str | None = None) -> dict[str, tuple[Any, ...]]:
    with duckdb.connect(str(ws / DB), read_only=True) as con:
        rows = con.execute(
            "select mrn, nhs_number, reference_date, status, patient_name, birth_date "
            "from raw.master_patients where run_id = coalesce(?, run_id)",
            [run_id],
        ).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def test_damaged_xlsx_imports_as_the_cohort_was(
    workspace: Path, cli: CliRunner, cohort: Cohort
) -> None:
    """It repairs every kind of damage in an .xlsx below title rows and stores the true values."""
    path = write_master_list(
        cohort, workspace / "master.xlsx", damage=True, title_rows=["HNC cohort master list"]
    )
    res = cli.invoke(app, ["--json", "patients", "import", path.name])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)

    assert stored(workspace) == expected(cohort)
    assert summary["patients"] == len(cohort.patients)
    assert summary["header_row"] == 3
    assert summary["withdrawn"] == sum(p.status == "withdrawn" for p in cohort.patients)
    assert {"mrn_leading_zeros", "serial_date", "text_date", "spaces"} <= set(summary["repairs"])
    with duckdb.connect(str(workspace / DB), read_only=True) as con:
        rows = con.execute(
            "select source_row, source_sheet, source_sha256, repairs from raw.master_patients "
            "order by source_row"
        ).fetchall()
        runs = con.execute("select input_files, outcome from raw.runs").fetchall()
    assert [r[0] for r in rows] == list(range(4, 4 + len(cohort.patients)))
    assert {r[1] for r in rows} == {"Patients"}
    assert {r[2] for r in rows} == {sha256_file(path)}
    repaired = [r[3] for r in rows if r[3]]
    assert 0 < len(repaired) <= summary["rows_repaired"]
    assert any("serial" in r for r in repaired)
    assert json.loads(runs[0][0])[0]["sha256"] == sha256_file(path)
    assert runs[0][1] == "success"


@pytest.mark.parametrize(
    ("encoding", "delimiter"), [("cp1252", ";"), ("utf-8-sig", ","), ("utf-8", ",")]
)
def test_damaged_csv_imports_as_the_cohort_was(
    workspace: Path, cli: CliRunner, cohort: Cohort, encoding: str, delimiter: str
) -> None:
    """It reads Excel's CSV (ANSI or UTF-8, comma or semicolon) and restores MRN zeros by config."""
    (workspace / "pacs2xnat.toml").write_text(
        '[warehouse]\npath = "warehouse/pacs2xnat.duckdb"\n[patients]\nmrn_width = 8\n'
    )
    path = write_master_list(
        cohort, workspace / "master.csv", damage=True, encoding=encoding, delimiter=delimiter
    )
    res = cli.invoke(app, ["patients", "import", path.name])
    assert res.exit_code == 0, res.output
    assert stored(workspace) == expected(cohort)
    assert f"Imported {len(cohort.patients)} patients" in res.output
    assert "NHS numbers stored as numbers" in res.output


def test_each_import_is_a_new_snapshot_and_odd_identifiers_are_kept(
    workspace: Path, cli: CliRunner, cohort: Cohort
) -> None:
    """It appends a second snapshot, loading an invalid NHS number and a doubly-linked MRN."""
    first = write_master_list(cohort, workspace / "q1.xlsx")
    assert cli.invoke(app, ["patients", "import", first.name]).exit_code == 0
    p = cohort.patients[0]
    twin = replace(p, nhs_number="9999999999")
    second = write_master_list(cohort, workspace / "q2.xlsx", patients=[*cohort.patients, twin])
    res = cli.invoke(app, ["--json", "patients", "import", second.name])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    run_id = summary["run_id"]
    assert summary["mrns_on_several_rows"] == 1
    assert summary["without_nhs_number"] == sum(not q.nhs_number for q in cohort.patients)
    with duckdb.connect(str(workspace / DB), read_only=True) as con:
        counts = con.execute(
            "select run_id, count(*) from raw.master_patients group by 1 order by min(loaded_at)"
        ).fetchall()
        nhs = con.execute(
            "select nhs_number from raw.master_patients where run_id = ? and mrn = ? order by 1",
            [run_id, p.mrn],
        ).fetchall()
    assert [c for _, c in counts] == [len(cohort.patients), len(cohort.patients) + 1]
    assert sorted([p.nhs_number, "9999999999"]) == [n for (n,) in nhs]
    invalid = cohort.patients[2]
    assert stored(workspace, run_id)[invalid.mrn][0] == invalid.nhs_number


@pytest.mark.slow
def test_imported_list_and_rules_build_with_dbt(
    workspace: Path, cli: CliRunner, cohort: Cohort
) -> None:
    """It feeds dbt: staging reads the repaired list, the merged seed loads and passes its tests."""
    master = write_master_list(cohort, workspace / "master.xlsx", damage=True)
    rules = write_rules_workbook(
        workspace / "rules.xlsx", ["CT Neck Chest Recon"], ["MR Pharynx Dynamic", "OPG"]
    )
    assert cli.invoke(app, ["patients", "import", master.name]).exit_code == 0
    assert cli.invoke(app, ["rules", "import", rules.name]).exit_code == 0
    res = cli.invoke(app, ["build"])
    assert res.exit_code == 0, res.output
    with duckdb.connect(str(workspace / DB), read_only=True) as con:
        valid = dict(
            con.execute(
                "select mrn, is_nhs_number_valid from staging.stg_spreadsheets__master_patients"
            ).fetchall()
        )
        seed_schema = con.execute(
            "select table_schema from information_schema.tables "
            "where table_name = 'study_description_rules'"
        ).fetchone()
        assert seed_schema is not None
        decisions = con.execute(
            f"select decision from {seed_schema[0]}.study_description_rules "
            "where description = 'OPG' order by 1"
        ).fetchall()
    assert valid == {
        p.mrn: p.nhs_number is not None and p is not cohort.patients[2] for p in cohort.patients
    }
    assert decisions == [("exclude",), ("include",)]  # the conflict is kept for triage
