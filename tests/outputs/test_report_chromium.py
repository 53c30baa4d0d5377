"""The data-availability page in headless Chromium (Debian's /usr/bin/chromium), offline."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from connectors.files import atomic_write
from connectors.outputs.report import HTML_NAME
from connectors.outputs.report_data import load_report_data
from connectors.outputs.report_html import page_payload, write_html
from tests.support.chromium_cdp import Chromium
from tests.support.real_parts import require_binary
from tests.support.report_fixtures import EVIL, Scenario, report_scenario  # noqa: F401

pytestmark = pytest.mark.chromium


@pytest.fixture(scope="module")
def page(report_scenario: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Any:  # noqa: F811
    """The page written from the scenario's marts, open in one headless Chromium."""
    exe = require_binary("/usr/bin/chromium", "chromium")
    data = load_report_data(report_scenario.warehouse, run_id="test-run", rules_sha256=None)
    path = tmp_path_factory.mktemp("page") / HTML_NAME
    atomic_write(path, lambda f: write_html(data, f), binary=False)
    with Chromium(exe) as browser:
        browser.open(path.as_uri())
        yield browser, page_payload(data), path


def _rows(browser: Chromium) -> list[list[str]]:
    return browser.eval(  # type: ignore[no-any-return]
        "[...document.querySelectorAll('#patients tbody tr')]"
        ".map(tr => [...tr.cells].map(td => td.textContent))"
    )


@pytest.mark.slow
def test_page_loads_offline_without_console_errors_or_requests(page: Any) -> None:
    """It renders with the network off: no console error, no request but the file itself."""
    browser, _, path = page
    assert browser.eval("document.body.dataset.ready") == "true"
    assert browser.console_errors() == []
    assert browser.requests() == [path.as_uri()]


@pytest.mark.slow
def test_every_chart_draws_its_marks(page: Any) -> None:
    """It draws bars per quarter, one reconciliation segment per category/reason and one dot
    per study of the patients on the table's first page in the swimmer plot."""
    browser, payload, _ = page
    bars = browser.eval("document.querySelectorAll('#chart-quarters svg rect').length")
    assert bars == len([r for r in payload["summary"] if r[1] != "no date" and r[2]])
    segments = browser.eval("document.querySelectorAll('#chart-reconciliation svg rect').length")
    assert segments == len(payload["reconciliation"])
    shown = {r[0] for r in _rows(browser)}
    index = {r[0]: i for i, r in enumerate(payload["patients"]["rows"])}
    pts = payload["points"]
    dots = sum(1 for i in range(0, len(pts), 3) if any(index[n] == pts[i] for n in shown))
    assert dots > 0
    assert browser.eval("document.querySelectorAll('#chart-swimmer svg circle').length") == dots
    assert browser.eval("document.querySelectorAll('#chart-swimmer svg line.zero').length") == 1


@pytest.mark.slow
def test_filter_box_narrows_the_patient_table(page: Any) -> None:
    """It keeps only the matching patient when one NHS number is typed, and all when cleared."""
    browser, payload, _ = page
    all_rows = payload["patients"]["rows"]
    before = len(_rows(browser))
    assert before == min(len(all_rows), payload["page_size"])
    target = all_rows[-1][0]
    browser.eval("document.getElementById('filter').focus()")
    browser.call("Input.insertText", session=True, text=target)
    rows = _rows(browser)
    assert [r[0] for r in rows] == [target]
    assert len(rows) < before
    browser.eval(
        "(() => { const f = document.getElementById('filter'); f.value = '';"
        " f.dispatchEvent(new Event('input')); })()"
    )
    assert len(_rows(browser)) == before


@pytest.mark.slow
def test_clicking_a_header_sorts_the_table(page: Any) -> None:
    """It sorts by a column on click (descending on the second click)."""
    browser, payload, _ = page
    col = payload["patients"]["columns"].index("Studies")
    click = f"document.querySelectorAll('#patients th')[{col}].click()"
    browser.eval(click)
    browser.eval(click)
    got = [int(r[col].replace(",", "")) for r in _rows(browser)]
    want = sorted((r[col] for r in payload["patients"]["rows"]), reverse=True)[: len(got)]
    assert got == want
    sort = f"document.querySelectorAll('#patients th')[{col}].getAttribute('aria-sort')"
    assert browser.eval(sort) == "descending"


@pytest.mark.slow
def test_markup_in_the_data_stays_text(page: Any) -> None:
    """It shows a modality that is HTML as text: no injected element, no script run."""
    browser, _, _ = page
    assert browser.eval("typeof window.__pwned") == "undefined"
    assert browser.eval("typeof window.__PWNED") == "undefined"
    assert browser.eval("document.images.length") == 0
    assert browser.eval("document.scripts.length") == 2
    legend = browser.eval("document.querySelector('#chart-quarters .legend').textContent")
    assert EVIL.upper() in legend


@pytest.mark.slow
def test_print_layout_hides_the_controls(page: Any, tmp_path: Path) -> None:
    """It hides the filter and pager when printed, and the screenshot is a real PNG."""
    browser, _, _ = page
    browser.call("Emulation.setEmulatedMedia", session=True, media="print")
    try:
        shown = browser.eval("getComputedStyle(document.getElementById('filter')).display")
        assert shown == "none"
    finally:
        browser.call("Emulation.setEmulatedMedia", session=True, media="")
    shot = tmp_path / "page.png"
    browser.screenshot(shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("P2X_SCREENSHOT"):  # how docs/data_availability.png can be refreshed
        shutil.copyfile(shot, os.environ["P2X_SCREENSHOT"])


def test_an_empty_report_opens_cleanly(tmp_path: Path) -> None:
    """It writes and opens a page and a workbook for a built but empty warehouse (before any
    sync): no console errors, the charts say there is nothing yet."""
    import openpyxl

    from connectors.outputs.report_data import ReportData, Table
    from connectors.outputs.report_xlsx import write_workbook

    exe = require_binary("/usr/bin/chromium", "chromium")
    cols = {
        "availability": ["nhs_number", "mrn", "modality", "patient_status", "is_on_master_list",
                         "reference_date", "number_of_studies", "first_study_date",
                         "last_study_date", "days_from_reference_to_first",
                         "days_from_reference_to_last", "studies_before_reference",
                         "studies_on_or_after_reference"],
        "summary": ["modality", "study_quarter", "number_of_studies"],
        "reconciliation": ["reconciliation_key", "reconciliation_status", "failure_reason",
                           "unexpected_reason"],
        "points": ["nhs_number", "modality", "days_from_reference"],
        "patients": ["nhs_number", "mrn", "patient_status", "is_on_master_list",
                     "reference_date", "number_of_studies", "modalities", "first_study_date",
                     "last_study_date", "days_from_reference_to_first",
                     "days_from_reference_to_last", "studies_before_reference",
                     "studies_on_or_after_reference"],
        "headlines": ["measure", "category", "subcategory", "value", "measure_order",
                      "sort_order"],
    }  # fmt: skip
    t = {k: Table(k, v, []) for k, v in cols.items()}
    data = ReportData(
        generated_at=dt.datetime(2026, 1, 1),
        run_id="r",
        rules_sha256=None,
        last_sync=None,
        availability=t["availability"],
        summary=t["summary"],
        reconciliation=t["reconciliation"],
        session_points=t["points"],
        patients=t["patients"],
        headlines=t["headlines"],
    )
    page = tmp_path / HTML_NAME
    atomic_write(page, lambda f: write_html(data, f), binary=False)
    atomic_write(tmp_path / "w.xlsx", lambda f: write_workbook(data, f), binary=True)
    assert openpyxl.load_workbook(tmp_path / "w.xlsx")["Reconciliation"].max_row == 1
    with Chromium(exe) as browser:
        browser.open(page.as_uri())
        assert browser.console_errors() == []
        assert "No dated studies" in browser.eval(
            "document.getElementById('chart-quarters').textContent"
        )
        assert browser.eval("document.querySelectorAll('#patients tbody tr').length") == 0
