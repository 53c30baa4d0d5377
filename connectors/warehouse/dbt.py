"""Run dbt in-process (``dbtRunner``) against the warehouse file. Never twice at once: each
invocation holds the writer lock (``lock.holding``) from start to end.

The warehouse path reaches ``profiles.yml`` through ``$PACS2XNAT_WAREHOUSE``, so plain
``dbt build`` in the project root and ``pacs2xnat build`` build the same file.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from connectors.clock import is_pinned, today
from connectors.errors import StepFailed, WarehouseBusy
from connectors.seams.dbt_duckdb import release_duckdb_environment
from connectors.warehouse.lock import holding

logger = logging.getLogger(__name__)

WAREHOUSE_ENV = "PACS2XNAT_WAREHOUSE"

#: What makes the dbt project: copied whole into a demo workspace or a test's folder.
PROJECT_FILES = ("dbt_project.yml", "profiles.yml", "models", "seeds", "macros", "data-tests")


def copy_project(dest: Path) -> Path:
    """A private copy of the shipped dbt project (its seeds may then change freely)."""
    from connectors import PROJECT_ROOT

    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in PROJECT_FILES:
        src = PROJECT_ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, dirs_exist_ok=True)
        elif src.is_file():
            shutil.copy2(src, dest / name)
    return dest


@dataclass
class BuildResult:
    success: bool
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    skipped: bool = False  # nothing changed since the builds that covered it
    nodes: list[str] = field(default_factory=list)  # unique ids that ran successfully
    listed: list[str] = field(default_factory=list)  # `dbt ls --output json`: unique ids


def run_dbt(
    args: Sequence[str],
    *,
    project_dir: Path,
    warehouse_path: Path,
    quiet: bool = True,
    vars: Mapping[str, object] | None = None,
    warehouse_url: str = "",
) -> BuildResult:
    """``dbt <args>`` on our project and warehouse; failure is ``StepFailed`` saying what broke.

    ``vars`` become ``--vars`` (JSON), e.g. ``{"today": "2026-11-25", "overlap_days": 14}``.
    ``warehouse_url`` (``postgresql://...``) runs it on the ``postgres`` target instead.
    """
    from dbt.cli.main import dbtRunner  # heavy import: only when dbt actually runs

    os.environ[WAREHOUSE_ENV] = str(Path(warehouse_path).resolve())
    os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    cli = [
        *args,
        "--project-dir",
        str(project_dir),
        "--profiles-dir",
        str(project_dir),
    ]
    if warehouse_url:
        cli += ["--target", "postgres"]
        os.environ.update(postgres_target_env(warehouse_url))
    merged_vars: dict[str, object] = {"today": today().isoformat()} if is_pinned() else {}
    merged_vars.update(dict(vars or {}))
    if merged_vars:
        cli += ["--vars", json.dumps(merged_vars, default=str)]
    if quiet:
        cli.insert(0, "--quiet")
    # dbt logs every event at debug level to logs/dbt.log by default, which costs a tenth of a
    # build's time; our own log has the results, dbt.log keeps warnings and errors
    cli[:0] = ["--log-level-file", "warn"]
    logger.debug("dbt %s", " ".join(cli))
    # DuckDB: the writer lock for the whole dbt invocation (another process waits, bounded),
    # and the file closed before it is let go; PostgreSQL: one dbt at a time per database.
    alone = holding(warehouse_path) if not warehouse_url else contextlib.nullcontext()
    with alone, _one_dbt_at_a_time(warehouse_url):
        old_umask = os.umask(0o077)  # dbt writes the warehouse, target/ and logs: owner-only
        try:
            res = dbtRunner().invoke(cli)
        finally:
            os.umask(old_umask)
            release_duckdb_environment()
    result = BuildResult(success=bool(res.success))
    if res.exception is not None:
        text = str(res.exception)
        if "lock" in text.lower() and "conflicting" in text.lower():
            raise WarehouseBusy(f"warehouse busy: dbt could not open {warehouse_path}: {text}")
        raise StepFailed(f"dbt {args[0]} could not run: {text}")
    if isinstance(res.result, list):  # dbt ls
        for line in res.result:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                result.listed.append(str(json.loads(line)["unique_id"]))
    for r in getattr(res.result, "results", None) or []:
        status = str(getattr(r, "status", "")).lower()
        result.counts[status] = result.counts.get(status, 0) + 1
        if status in {"success", "pass", "warn"}:
            result.nodes.append(str(getattr(getattr(r, "node", None), "unique_id", "")))
        if status in {"error", "fail"}:
            node = getattr(r, "node", None)
            name = getattr(node, "unique_id", "?")
            result.failures.append(f"{name}: {status}: {(getattr(r, 'message', '') or '').strip()}")
    return result


def _one_dbt_at_a_time(warehouse_url: str) -> contextlib.AbstractContextManager[None]:
    """On PostgreSQL, several pacs2xnat processes may build at once: they take turns."""
    if not warehouse_url:
        return contextlib.nullcontext()
    from connectors.warehouse.postgres import dbt_lock

    return dbt_lock(warehouse_url)


def postgres_target_env(url: str) -> dict[str, str]:
    """What ``profiles.yml``'s ``postgres`` target reads from the environment (no password:
    libpq has it from ``$PGPASSWORD`` or ``~/.pgpass``)."""
    parts = urlsplit(url)
    return {
        "PACS2XNAT_PG_HOST": parts.hostname or "localhost",
        "PACS2XNAT_PG_PORT": str(parts.port or 5432),
        "PACS2XNAT_PG_DATABASE": parts.path.strip("/"),
        "PACS2XNAT_PG_USER": parts.username or getpass.getuser(),
    }


def build(
    *,
    project_dir: Path,
    warehouse_path: Path,
    select: Sequence[str] = (),
    quiet: bool = True,
    vars: Mapping[str, object] | None = None,
) -> BuildResult:
    """``dbt build`` (seeds, unit tests, models, data tests); ``StepFailed`` on any failure."""
    args = ["build"]
    if select:
        # "cautious": a test runs only when every model it reads is selected, so a partial
        # build (the query plan, the manifest) never runs a test on a mart it did not build.
        # Unit tests check the SQL's rules, not the data: the full `build` runs them, a partial
        # build inside a command need not pay for them again.
        args += ["--select", *select, "--indirect-selection", "cautious"]
        args += ["--exclude-resource-type", "unit_test"]
    result = run_dbt(
        args, project_dir=project_dir, warehouse_path=warehouse_path, quiet=quiet, vars=vars
    )
    if not result.success:
        detail = "\n  ".join(result.failures[:20]) or "see target/run_results.json"
        raise StepFailed(f"dbt build failed:\n  {detail}")
    return result
