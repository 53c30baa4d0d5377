"""``pacs2xnat run``: the quarterly cycle, query → build → export → load → sync → rebuild →
report.

dbt runs only as often as it must: the query builds the plan's models (no tests), ``build``
builds and tests everything the load and the admin's reports need, the load uses that manifest
as it is (no sync or build of its own: XNAT is asked once before each upload whether it holds
the study since the last sync), and ``rebuild`` builds and tests what the load and the sync
changed, and the report's marts. No step runs dbt's unit tests (``pacs2xnat build
--with-unit-tests`` does), and a step whose inputs did not change builds nothing
(``connectors/warehouse/builds.py``). Nothing before ``load`` needs XNAT, so a team that sends
the CSV to CSC runs ``--until export`` without it.

Each step is the same function its own command calls, run inside this invocation's run record
(one lock, one ``raw.runs`` row). A failing step stops the cycle with its message; the steps
done are kept in the run's summary, so the next ``pacs2xnat run`` continues after them instead
of repeating finished work (``--restart`` starts again from the query).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors import console
from connectors.errors import EXIT_OK, EXIT_SOME_FAILED, InputError
from connectors.warehouse.builds import Selection, refresh
from connectors.warehouse.runs import RunContext

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    name: str
    describe: str
    run: Callable[[RunContext], dict[str, Any]]


#: Every data test runs once a cycle, on the data it guards: the ingest marts' tests before the
#: load (what the load and the CSV use), every other test after it, on the final data.
#: `build`: every model but the report's, and the tests of the ingest marts.
BEFORE_LOAD = Selection(
    select=("resource_type:model", "resource_type:seed", "tag:ingest,resource_type:test"),
    exclude=("tag:report",),
    indirect="empty",
)
#: `rebuild`: what the load's attempts and the sync changed, the report's marts, and every
#: test but the ingest marts'.
AFTER_LOAD = Selection(
    select=("source:xnat+", "source:pipeline+", "tag:report", "resource_type:test"),
    exclude=("tag:ingest,resource_type:test",),
    indirect="empty",
)


def _query(rc: RunContext) -> dict[str, Any]:
    from connectors.pacs.query import run_query

    return run_query(rc)


def _sync(rc: RunContext) -> dict[str, Any]:
    from connectors.xnat.sync import run_sync

    return run_sync(rc)


def _build(selection: Selection) -> Callable[[RunContext], dict[str, Any]]:
    def build(rc: RunContext) -> dict[str, Any]:
        result = refresh(rc, selection)
        return {"dbt": result.counts, "skipped": result.skipped}

    return build


def _export(rc: RunContext) -> dict[str, Any]:
    from connectors.outputs.export import export_ingest_csv

    return export_ingest_csv(rc, None)


def _load(rc: RunContext) -> dict[str, Any]:
    from connectors.load.runner import run_load

    if rc.summary.get("resumed_paused") and "export" in rc.summary.get("resumed_after", []):
        # the last run paused in its load (outside the PACS windows, --no-wait): what it loaded
        # leaves the manifest after a sync and a rebuild, so nothing is retrieved twice
        return run_load(rc)
    # the cycle built the manifest just before; XNAT is checked before each upload
    return run_load(rc, sync_first=False, build_manifest=False)


def _report(rc: RunContext) -> dict[str, Any]:
    from connectors.outputs.report import run_report

    return run_report(rc, None)


STEPS: tuple[Step, ...] = (
    Step("query", "C-FIND every due patient", _query),
    Step("build", "dbt build: select, link, manifest", _build(BEFORE_LOAD)),
    Step("export", "the ingest CSV", _export),
    Step("load", "load the manifest into XNAT", _load),
    Step("sync", "read back what XNAT holds", _sync),
    Step("rebuild", "dbt build: availability, failures", _build(AFTER_LOAD)),
    Step("report", "availability workbook and HTML", _report),
)
STEP_NAMES = tuple(s.name for s in STEPS)


def _previous_progress(rc: RunContext) -> list[str]:
    """Steps finished by the last ``run`` if it did not complete (and none completed since);
    ``rc.summary["resumed_paused"]`` says whether it paused outside the PACS windows."""
    with rc.warehouse.connect(read_only=True) as con:
        row = con.execute(
            "select outcome, summary from raw.runs where command = 'run' and run_id <> ? "
            "order by started_at desc limit 1",
            [rc.run_id],
        ).fetchone()
    if row is None or row[0] in ("success", "partial"):
        return []
    rc.summary["resumed_paused"] = row[0] == "paused"
    try:
        done = json.loads(row[1] or "{}").get("steps_done", [])
    except ValueError:
        return []
    return [s for s in done if s in STEP_NAMES]


def run_cycle(rc: RunContext, *, until: str | None = None, restart: bool = False) -> dict[str, Any]:
    """Run the steps in order; returns the summary (``exit_code`` 1 when studies failed)."""
    if until is not None and until not in STEP_NAMES:
        raise InputError(f"--until {until!r}: must be one of {', '.join(STEP_NAMES)}")
    skip = [] if restart else _previous_progress(rc)
    if skip:
        console.say(f"continuing the unfinished cycle: {', '.join(skip)} already done")
    summary: dict[str, Any] = {"steps_done": [], "steps": {}, "resumed_after": skip}
    rc.summary.update(summary)
    exit_code = EXIT_OK
    for step in STEPS:
        if step.name in skip:
            summary["steps_done"].append(step.name)
            continue
        console.say(f"[{step.name}] {step.describe}")
        started = time.monotonic()
        result = dict(step.run(rc) or {})
        result["seconds"] = round(time.monotonic() - started, 3)  # benchmarks/cycle reads it
        exit_code = max(exit_code, int(result.pop("exit_code", EXIT_OK)))
        summary["steps"][step.name] = result
        if result.get("paused_until"):  # outside the PACS windows, --no-wait: rerun continues
            summary["paused_until"] = result["paused_until"]
            rc.summary.update(summary)
            rc.save_summary()
            break
        summary["steps_done"].append(step.name)
        rc.summary.update(summary)
        rc.save_summary()
        if step.name == until:
            break
    if not summary.get("paused_until"):  # paused before the build: no selection to count
        summary["selection"] = _selection_counts(rc)
    summary["exit_code"] = EXIT_SOME_FAILED if exit_code == EXIT_SOME_FAILED else exit_code
    _print_table(summary)
    return summary


def _selection_counts(rc: RunContext) -> dict[str, int]:
    rows = rc.warehouse.read_relation("main.pacs_study_selection_summary")
    return {str(r["selection_status"]): int(r["number_of_studies"]) for r in rows}


def _print_table(summary: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title="pacs2xnat run", show_header=True, header_style="bold")
    table.add_column("step")
    table.add_column("outcome", overflow="fold")
    for name in STEP_NAMES:
        if name in summary["steps"]:
            detail = _describe(name, summary["steps"][name], summary)
        elif name in summary.get("resumed_after", []):
            detail = "done in the previous run"
        else:
            detail = "not run"
        table.add_row(name, detail)
    console.show(table)


def _describe(name: str, s: dict[str, Any], summary: dict[str, Any]) -> str:
    """One line a person reads: the numbers that matter for each step."""
    if name == "query":
        return (
            f"{s.get('patients_queried', 0)} patients queried, "
            f"{s.get('studies_found', 0)} studies found, {s.get('patients_failed', 0)} failed"
        )
    if name == "build":
        sel = summary.get("selection", {})
        held = sum(sel.get(k, 0) for k in ("set_aside", "unlinked", "withdrawn"))
        return (
            f"{sel.get('selected', 0)} selected (linked), {sel.get('excluded', 0)} excluded, "
            f"{sel.get('unknown', 0) + sel.get('conflict', 0)} unknown or conflicting "
            f"(description_triage), {held} set aside or unlinked (linkage_report)"
        )
    if name == "export":
        return f"{s.get('rows', 0)} rows -> {s.get('path', '')}"
    if name == "load":
        by_reason = s.get("failed_by_reason") or {}
        reasons = ", ".join(f"{k} {v}" for k, v in by_reason.items())
        return (
            f"{s.get('loaded', 0)} loaded, {s.get('already_present', 0)} already in XNAT, "
            f"{s.get('failed', 0)} failed{f' ({reasons})' if reasons else ''}"
        )
    if name == "sync":
        return f"{s.get('sessions', 0)} sessions of {s.get('subjects', 0)} subjects in XNAT"
    if name == "rebuild":
        return _short(s)
    if name == "report":
        return f"{s.get('html', '')}\n{s.get('workbook', '')}"
    return _short(s)


def _short(d: dict[str, Any]) -> str:
    parts = []
    for k, v in d.items():
        if isinstance(v, dict):
            v = ", ".join(f"{k2} {v2}" for k2, v2 in v.items())
        elif isinstance(v, Path):
            v = str(v)
        parts.append(f"{k}: {v}")
    return "; ".join(parts)
