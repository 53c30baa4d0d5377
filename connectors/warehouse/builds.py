"""dbt only as often as it must: each command asks for what it needs (``Selection``), and nothing
is built that the builds since the inputs last changed already built and tested.

The inputs of a build are the raw tables the models read (row count and newest ``loaded_at`` of
each: they are append-only), the dbt project's files (models, seeds, macros, tests, config), the
vars and the day. ``today`` is a var only when pinned (``dbt_vars``): otherwise the SQL reads
the warehouse's ``current_date``, checked against this machine's date before each build. Every
build pacs2xnat runs is one ``raw.dbt_builds`` row: the inputs it started from, the nodes it
built and tested, and dbt's invocation id. A command's selection is resolved to nodes on dbt's
own graph (``target/manifest.json``) and skipped when every node is among those built (and
tested, if asked) by the successful builds since the inputs last changed; a plain ``dbt build``
someone ran in between (it rewrites ``target/run_results.json``) counts as a change. A selection
of live nodes only (views and seeds: ``dbt_graph.Resolved``), such as the query plan's, is
compared on the project's files and the vars alone: a view reads the raw rows (and the date) as
they are when it is read, so new rows and a new day do not make it stale: `pacs2xnat query` runs
no dbt once the plan's views exist, after a master-list import or three months later, until the
project or the overlap changes.

Unit tests check the SQL's rules, not the data: only ``pacs2xnat build --with-unit-tests`` (and
the analyst's plain ``dbt build``, and CI) runs them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

from connectors import clock
from connectors.errors import StepFailed
from connectors.warehouse import journal
from connectors.warehouse.dbt import PROJECT_FILES, BuildResult, run_dbt
from connectors.warehouse.dbt_graph import Selection, resolve
from connectors.warehouse.lock import holding
from connectors.warehouse.runs import RunContext
from connectors.warehouse.schema import RAW_TABLES

logger = logging.getLogger(__name__)

#: raw.runs changes with every invocation (this build's own row included) and no model past
#: its staging view reads it, so it is not an input that makes a rebuild necessary.
NOT_INPUTS = {"runs"}


EVERYTHING = Selection()


def dbt_vars(rc: RunContext, warehouse_day: dt.date | None = None) -> dict[str, object]:
    """The vars of a build: the query overlap, and ``today`` only when it is pinned
    (``PACS2XNAT_TODAY``) or the warehouse's own ``current_date`` (``warehouse_day``) is not
    this machine's date (a PostgreSQL server in another time zone). Otherwise the SQL reads
    ``current_date``, so a view built on one day is as right the next, and the vars (which make
    dbt re-parse the whole project when they change) stay the same from day to day."""
    vars_: dict[str, object] = {"overlap_days": rc.settings.cycle.overlap_days}
    if clock.is_pinned() or (warehouse_day is not None and warehouse_day != clock.today()):
        vars_["today"] = clock.today().isoformat()
    return vars_


def refresh(
    rc: RunContext, selection: Selection = EVERYTHING, *, force: bool = False, quiet: bool = True
) -> BuildResult:
    """Build ``selection`` unless the builds since its inputs last changed already built (and
    tested) every node of it; ``StepFailed`` saying what broke when dbt fails.
    ``BuildResult.skipped`` says whether it ran."""
    # One hold of the writer lock from the inputs' fingerprint to the build's record, so no
    # other process's rows fall between what was measured and what dbt read.
    with holding(rc.settings.warehouse_path):
        journal.replay(rc.warehouse)  # rows journaled while the warehouse was busy, first
        return _refresh(rc, selection, force=force, quiet=quiet)


def _refresh(rc: RunContext, selection: Selection, *, force: bool, quiet: bool) -> BuildResult:
    vars_, inputs = _inputs(rc)
    if not force:
        wanted = resolve(selection, rc.project_dir)
        if wanted is not None:
            # live nodes (views, seeds) follow the raw tables: only the project and vars count
            done = _done_since_last_change(rc, inputs, live=wanted.live)
            if done is not None and wanted.nodes <= done:
                logger.info("dbt: %s unchanged since its last build; skipped", selection.describe())
                return BuildResult(success=True, skipped=True)
    started = clock.utcnow()
    try:
        result = run_dbt(
            selection.dbt_args(),
            project_dir=rc.project_dir,
            warehouse_path=rc.settings.warehouse_path,
            warehouse_url=rc.settings.warehouse.url,
            quiet=quiet,
            vars=vars_,
        )
    except StepFailed:
        result = BuildResult(success=False)
        _record(rc, selection, inputs, started, result)
        raise
    _record(rc, selection, inputs, started, result)
    if not result.success:
        detail = "\n  ".join(result.failures[:20]) or "see target/run_results.json"
        raise StepFailed(f"dbt build of {selection.describe()} failed:\n  {detail}")
    return result


class Inputs(NamedTuple):
    """Fingerprints of what a build depends on: ``project`` of the vars and the project's
    files (all a live node, a view or a seed, depends on), ``everything`` of those and the raw
    tables."""

    project: str
    everything: str


def _inputs(rc: RunContext) -> tuple[dict[str, object], Inputs]:
    """The build's vars (``dbt_vars``, told the warehouse's date) and what its result depends
    on, measured before it runs: the vars and the project's files (what a live node, a view or
    a seed, depends on), and with them the day (a table built from ``current_date`` is of the
    day it was built) and the raw tables the models read (append-only: count and newest
    loaded_at). One short read of the warehouse; the files are hashed after it."""
    with rc.warehouse.connect(read_only=True) as con:
        day = con.execute("select current_date").fetchone()
        raw = [
            (table.name, con.execute(f"select count(*), max(loaded_at) from raw.{table.name}")
             .fetchone())
            for table in RAW_TABLES.values()
            if table.is_source and table.name not in NOT_INPUTS
        ]  # fmt: skip
    vars_ = dbt_vars(rc, day[0] if day else None)
    h = hashlib.sha256(json.dumps(vars_, sort_keys=True, default=str).encode())
    root = Path(rc.project_dir)
    for name in PROJECT_FILES:
        top = root / name
        files = sorted(p for p in top.rglob("*") if p.is_file()) if top.is_dir() else [top]
        for path in files:
            if path.is_file():
                h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    project = h.hexdigest()
    h.update(f"day:{clock.today().isoformat()}".encode())
    for name, row in raw:
        h.update(f"{name}:{row}".encode())
    return vars_, Inputs(project, h.hexdigest())


def _last_invocation(project_dir: Path) -> str:
    """dbt's own record of its last invocation in this project (ours or anybody's)."""
    try:
        with open(Path(project_dir) / "target" / "run_results.json", encoding="utf-8") as f:
            return str(json.load(f).get("metadata", {}).get("invocation_id", ""))
    except (OSError, ValueError):
        return ""


def _done_since_last_change(rc: RunContext, inputs: Inputs, live: bool) -> set[str] | None:
    """The nodes built or tested by our successful builds on these same inputs, back to the
    first one on other inputs or that failed (it may have rebuilt models from other data);
    None when the last dbt invocation in the project was not ours. ``live``: only the
    project's fingerprint (vars and files) is compared with each build's."""
    rows = rc.warehouse.read_relation(
        "raw.dbt_builds", "order by finished_at desc, build_id desc limit 100"
    )
    if not rows or rows[0]["dbt_invocation_id"] != _last_invocation(rc.project_dir):
        return None
    done: set[str] = set()
    for row in rows:
        same = (
            row["project_fingerprint"] == inputs.project
            if live
            else row["fingerprint"] == inputs.everything
        )
        if not row["success"] or not same:
            break
        done.update(json.loads(row["nodes"] or "[]"))
    return done


def _record(
    rc: RunContext,
    selection: Selection,
    inputs: Inputs,
    started: dt.datetime,
    result: BuildResult,
) -> None:
    """One ``raw.dbt_builds`` row: the inputs as they were when the build started (the
    project's and, with the raw tables, all), the nodes it built and tested, and the
    invocation dbt has just written."""
    now = clock.utcnow()
    rc.warehouse.append(
        "dbt_builds",
        [
            {
                "run_id": rc.run_id,
                "loaded_at": now,
                "build_id": str(uuid.uuid4()),
                "command": " ".join(selection.dbt_args()),
                "selection": json.dumps(asdict(selection)),
                "fingerprint": inputs.everything,
                "project_fingerprint": inputs.project,
                "dbt_invocation_id": _last_invocation(rc.project_dir),
                "started_at": started,
                "finished_at": now,
                "success": result.success,
                "counts": json.dumps(result.counts),
                "nodes": json.dumps(sorted(result.nodes)),
            }
        ],
    )
