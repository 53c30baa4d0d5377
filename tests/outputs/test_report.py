"""The data-availability marts and `pacs2xnat report`: the workbook read back with openpyxl."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
from collections import Counter
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from typer.testing import CliRunner

from connectors.app.cli import app
from connectors.outputs.report_data import ReportData, Table
from connectors.outputs.report_html import render_html, safe_json
from connectors.outputs.report_xlsx import header_label, write_workbook
from tests.support.report_fixtures import EVIL, Scenario, report_scenario  # noqa: F401

MARTS = ("data_availability", "data_availability_summary", "reconciliation")


@pytest.fixture(scope="module")
def report_out(report_scenario: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Any:  # noqa: F811
    """`pacs2xnat --json report --out DIR` run once on the scenario."""
    out = tmp_path_factory.mktemp("out") / "reports"
    old = Path.cwd()
    os.chdir(report_scenario.root)
    try:
        res = CliRunner().invoke(
            app, ["--config", str(report_scenario.config), "--json", "report", "--out", str(out)]
        )
    finally:
        os.chdir(old)
    return res, out


@pytest.mark.slow
def test_data_availability_counts_each_patients_sessions_per_modality(
    report_scenario: Scenario,  # noqa: F811
) -> None:
    """It counts, per NHS number and modality, exactly the sessions the sync put in XNAT."""
    sc = report_scenario
    expected = Counter((s["subject_label"], s["modality"].upper()) for s in sc.sessions)
    rows = sc.read("main.data_availability")
    got = {(r["nhs_number"], r["modality"]): r["number_of_studies"] for r in rows if r["modality"]}
    assert got == dict(expected)
    by_nhs = {p.nhs_number: p for p in sc.cohort.patients if p.nhs_number}
    for r in rows:
        if not r["modality"] or r["nhs_number"] not in by_nhs:
            continue
        ref = by_nhs[r["nhs_number"]].reference_date
        dates = [
            dt.date.fromisoformat(s["session_date"])
            for s in sc.sessions
            if s["subject_label"] == r["nhs_number"] and s["modality"].upper() == r["modality"]
        ]
        assert r["reference_date"] == ref
        assert r["first_study_date"] == min(dates)
        assert r["days_from_reference_to_last"] == (max(dates) - ref).days
        assert r["studies_before_reference"] == sum(d < ref for d in dates)
        assert r["studies_on_or_after_reference"] == sum(d >= ref for d in dates)


@pytest.mark.slow
def test_data_availability_summary_buckets_every_session_in_one_quarter(
    report_scenario: Scenario,  # noqa: F811
) -> None:
    """It puts each session in its calendar quarter, per modality, and loses none."""
    sc = report_scenario
    expected: Counter[tuple[str, str]] = Counter()
    for s in sc.sessions:
        d = dt.date.fromisoformat(s["session_date"])
        expected[(s["modality"].upper(), f"{d.year}-Q{(d.month - 1) // 3 + 1}")] += 1
    rows = sc.read("main.data_availability_summary")
    assert {(r["modality"], r["study_quarter"]): r["number_of_studies"] for r in rows} == dict(
        expected
    )


@pytest.mark.slow
def test_reconciliation_puts_each_selected_study_and_session_in_its_category(
    report_scenario: Scenario,  # noqa: F811
) -> None:
    """It marks selected studies present / missing (with the failure reason) / uid_mismatch,
    and the session nobody selected unexpected."""
    sc = report_scenario
    rows = {r["reconciliation_key"]: r for r in sc.read("main.reconciliation")}
    in_xnat = {s["study_instance_uid"] for s in sc.sessions}
    mismatch = next(s for s in sc.sessions if s["session_id"] == sc.mismatch_session)
    for uid, study in sc.selected.items():
        row = rows[uid]
        if uid in in_xnat:
            assert row["reconciliation_status"] == "present", uid
        elif study["session_label"] == mismatch["session_label"]:
            assert row["reconciliation_status"] == "uid_mismatch"
            assert row["xnat_study_instance_uid"] == mismatch["study_instance_uid"]
        elif uid == sc.failed_uid:
            assert (row["reconciliation_status"], row["failure_reason"]) == (
                "missing",
                sc.failed_reason,
            )
        else:
            assert (row["reconciliation_status"], row["failure_reason"]) == (
                "missing",
                "not_yet_loaded",
            )
    unexpected = rows[f"xnat:{sc.unexpected_session}"]
    assert unexpected["reconciliation_status"] == "unexpected"
    assert unexpected["unexpected_reason"] == "not_from_pacs2xnat"
    # every session is accounted for exactly once: as a study's match or as its own row
    matched = [r["xnat_session_id"] for r in rows.values() if r["xnat_session_id"]]
    assert sorted(matched) == sorted(s["session_id"] for s in sc.sessions)


@pytest.mark.slow
def test_report_writes_an_owner_only_workbook_and_page(report_out: Any) -> None:
    """It exits 0, writes both files 0600 and prints their paths and hashes in --json."""
    res, out = report_out
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    for name in ("data_availability.xlsx", "data_availability.html"):
        path = out / name
        assert path.is_file()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert summary["workbook"] == str(out / "data_availability.xlsx")
    assert len(summary["html_sha256"]) == 64
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temp left


@pytest.mark.slow
def test_workbook_has_a_cover_and_one_filtered_frozen_sheet_per_mart(
    report_out: Any,
    report_scenario: Scenario,  # noqa: F811
) -> None:
    """It opens back with openpyxl: sheets, headers, frozen header, filter, widths, counts."""
    res, out = report_out
    wb = openpyxl.load_workbook(out / "data_availability.xlsx")
    assert wb.sheetnames == ["Cover", "Availability", "Summary", "Reconciliation"]
    for sheet, mart in zip(wb.sheetnames[1:], MARTS, strict=True):
        ws = wb[sheet]
        rows = report_scenario.read(f"main.{mart}")
        assert [c.value for c in ws[1]] == [header_label(c) for c in rows[0]]
        assert ws.max_row == len(rows) + 1
        assert ws.freeze_panes == "A2"
        assert ws.auto_filter.ref == f"A1:{ws.cell(1, ws.max_column).column_letter}{ws.max_row}"
        widths = [ws.column_dimensions[c.column_letter].width for c in ws[1]]
        assert all(6 <= w <= 60 for w in widths)
        assert all(c.font.b for c in ws[1])
    cover = {r[0]: r[1] for r in wb["Cover"].iter_rows(min_row=3, values_only=True) if r and r[0]}
    run_id = json.loads(res.stdout)["run_id"]
    assert cover["Report run id"] == run_id
    assert cover["XNAT snapshot: sync run id"] == "sync-1"
    assert cover["Studies in XNAT"] == len(report_scenario.sessions)
    assert isinstance(cover["Generated at (UTC)"], dt.datetime)


@pytest.mark.slow
def test_workbook_cells_are_real_dates_and_numbers(
    report_out: Any,
    report_scenario: Scenario,  # noqa: F811
) -> None:
    """It stores dates as Excel dates (with a date format) and counts as numbers."""
    _, out = report_out
    ws = openpyxl.load_workbook(out / "data_availability.xlsx")["Availability"]
    header = [c.value for c in ws[1]]
    first = header.index(header_label("first_study_date"))
    count = header.index(header_label("number_of_studies"))
    dated = [r for r in ws.iter_rows(min_row=2) if r[first].value is not None]
    assert dated
    for r in dated:
        assert r[first].is_date
        assert r[first].number_format == "yyyy-mm-dd"
        assert isinstance(r[count].value, int)
    total = sum(r[count].value for r in ws.iter_rows(min_row=2))
    assert total == len(report_scenario.sessions)


def _tiny_data(description: str) -> ReportData:
    av_cols = [
        "nhs_number", "mrn", "modality", "patient_status", "is_on_master_list",
        "reference_date", "number_of_studies", "number_of_scans", "first_study_date",
        "last_study_date", "days_from_reference_to_first", "days_from_reference_to_last",
        "studies_before_reference", "studies_on_or_after_reference", "studies_without_date",
    ]  # fmt: skip
    d = dt.date(2025, 3, 1)
    av = Table("data_availability", av_cols, [
        ("9434765919", "M1", "CT", "active", True, d, 1, 2, d, d, 0, 0, 0, 1, 0),
    ])  # fmt: skip
    summary = Table(
        "data_availability_summary",
        ["modality", "study_quarter", "quarter_start_date", "number_of_studies",
         "number_of_patients", "number_of_scans"],
        [("CT", "2025-Q1", dt.date(2025, 1, 1), 1, 1, 2)],
    )  # fmt: skip
    rec = Table(
        "reconciliation",
        ["reconciliation_key", "reconciliation_status", "failure_reason", "unexpected_reason",
         "study_description"],
        [("1.2", "missing", "timeout", None, description)],
    )  # fmt: skip
    points = Table("data_availability_sessions", ["nhs_number", "modality", "days_from_reference"],
                   [("9434765919", "CT", 0)])  # fmt: skip
    patients = Table(
        "data_availability_patients",
        ["nhs_number", "mrn", "patient_status", "is_on_master_list", "reference_date",
         "number_of_studies", "modalities", "first_study_date", "last_study_date",
         "days_from_reference_to_first", "days_from_reference_to_last",
         "studies_before_reference", "studies_on_or_after_reference"],
        [("9434765919", "M1", "active", True, d, 1, "CT 1", d, d, 0, 0, 0, 1)],
    )  # fmt: skip
    headlines = Table(
        "data_availability_headlines",
        ["measure", "category", "subcategory", "value", "measure_order", "sort_order"],
        [("patients", None, None, 1, 1, 1), ("studies_in_xnat", None, None, 1, 4, 1),
         ("reconciliation", "missing", None, 1, 6, 2),
         ("missing_by_reason", "timeout", None, 1, 7, 1),
         ("reconciliation_segments", "missing", "timeout", 1, 9, 1)],
    )  # fmt: skip
    return ReportData(
        dt.datetime(2026, 1, 1), "run-1", None, None, av, summary, rec, points, patients, headlines
    )


def test_workbook_keeps_a_formula_looking_description_as_text(tmp_path: Path) -> None:
    """It writes `=HYPERLINK(...)` as a text cell, never as a formula Excel would run."""
    data = _tiny_data('=HYPERLINK("http://evil.example","x")')
    path = tmp_path / "w.xlsx"
    with open(path, "wb") as f:
        write_workbook(data, f)
    ws = openpyxl.load_workbook(path)["Reconciliation"]
    cell = ws.cell(2, 5)
    assert cell.value == '=HYPERLINK("http://evil.example","x")'
    assert cell.data_type == "s"


def test_page_data_cannot_close_its_script_element() -> None:
    """It serialises the data with <, > and & escaped, so markup in a value stays data."""
    page = render_html(_tiny_data(EVIL))
    assert "</script><script>window" not in page
    assert page.count("<script") == 2  # the JSON block and the page's own script
    assert json.loads(safe_json({"v": EVIL}))["v"] == EVIL


def test_report_before_build_exits_2_and_writes_nothing(workspace: Path, cli: CliRunner) -> None:
    """It refuses with exit 2 and tells the user to build when the marts do not exist yet."""
    out = workspace / "out"
    res = cli.invoke(app, ["report", "--out", str(out)])
    assert res.exit_code == 2
    assert "pacs2xnat build" in res.output
    assert not out.exists() or not any(out.iterdir())
