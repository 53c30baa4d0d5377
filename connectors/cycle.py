"""``pacs2xnat run``: the quarterly cycle, query → build → export → load → sync → build → report.

Each step is the same function its own command calls, run inside this invocation's run record
(one lock, one ``raw.runs`` row). A failing step stops the cycle with its message; the steps
done are kept in the run's summary, so the next ``pacs2xnat run`` continues after them instead
of repeating finished work (``--restart`` starts again from the query).
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors import console
from connectors.dbt import build as dbt_build
from connectors.errors import EXIT_OK, EXIT_SOME_FAILED, InputError
from connectors.runs import RunContext

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    name: str
    target: str  # "module:function", imported when the step runs
    describe: str

    def function(self) -> Callable[..., dict[str, Any]]:
        module, func = self.target.split(":")
        return getattr(importlib.import_module(module), func)  # type: ignore[no-any-return]


STEPS: tuple[Step, ...] = (
    Step("query", "connectors.query:run_query", "C-FIND every due patient"),
    Step("build", "connectors.cycle:build_step", "dbt build: select, link, manifest"),
    Step("export", "connectors.export:export_ingest_csv", "the ingest CSV"),
    Step("load", "connectors.load:run_load", "load the manifest into XNAT"),
    Step("sync", "connectors.sync:run_sync", "read back what XNAT holds"),
    Step("rebuild", "connectors.cycle:build_step", "dbt build: availability, failures"),
    Step("report", "connectors.report:run_report", "availability workbook and HTML"),
)
STEP_NAMES = tuple(s.name for s in STEPS)


def build_step(rc: RunContext) -> dict[str, Any]:
    result = dbt_build(
        project_dir=rc.project_dir, warehouse_path=rc.settings.warehouse_path, quiet=True
    )
    return {"dbt": result.counts}


def _previous_progress(rc: RunContext) -> list[str]:
    """Steps finished by the last ``run`` if it did not complete (and none completed since)."""
    with rc.warehouse.connect(read_only=True) as con:
        row = con.execute(
            "select outcome, summary from raw.runs where command = 'run' and run_id <> ? "
            "order by started_at desc limit 1",
            [rc.run_id],
        ).fetchone()
    if row is None or row[0] in ("success", "partial"):
        return []
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
        result = step.function()(rc)
        result = dict(result or {})
        exit_code = max(exit_code, int(result.pop("exit_code", EXIT_OK)))
        summary["steps"][step.name] = result
        summary["steps_done"].append(step.name)
        rc.summary.update(summary)
        _save_progress(rc)
        if step.name == until:
            break
    summary["selection"] = _selection_counts(rc)
    summary["exit_code"] = EXIT_SOME_FAILED if exit_code == EXIT_SOME_FAILED else exit_code
    _print_table(summary)
    return summary


def _save_progress(rc: RunContext) -> None:
    with rc.warehouse.connect() as con:
        con.execute(
            "update raw.runs set summary = ? where run_id = ?",
            [json.dumps(rc.summary, default=str), rc.run_id],
        )


def _selection_counts(rc: RunContext) -> dict[str, int]:
    rows = rc.warehouse.read_relation("main.pacs_study_selection")
    counts: dict[str, int] = {}
    for r in rows:
        key = str(r.get("selection_status"))
        counts[key] = counts.get(key, 0) + 1
    return counts


def _print_table(summary: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title="pacs2xnat run", show_header=True, header_style="bold")
    table.add_column("step")
    table.add_column("outcome")
    for name in STEP_NAMES:
        if name in summary["steps"]:
            detail = _short(summary["steps"][name])
        elif name in summary.get("resumed_after", []):
            detail = "done in the previous run"
        else:
            detail = "not run"
        table.add_row(name, detail)
    if summary.get("selection"):
        table.add_row("selection", _short(summary["selection"]))
    if not console.json_mode():
        console.err.print(table)


def _short(d: dict[str, Any]) -> str:
    parts = []
    for k, v in d.items():
        if isinstance(v, dict):
            v = ", ".join(f"{k2} {v2}" for k2, v2 in v.items())
        elif isinstance(v, Path):
            v = str(v)
        parts.append(f"{k}: {v}")
    return "; ".join(parts)
