"""A dbt-duckdb plugin (named in ``profiles.yml``) so plain ``dbt build`` works on a clean clone.

Before dbt's first connection it creates the warehouse folder (0700); on every connection it
applies the raw schema from ``connectors/warehouse/schema.py`` (``RAW_TABLES``, the one owner of the
DDL: ``create ... if not exists``, so an existing warehouse is untouched) and keeps the file
owner-only (0600). dbt then builds empty marts instead of failing on missing sources. Plain
``dbt build`` also takes pacs2xnat's writer lock (``lock.hold_until_exit``) so it and a running
load take turns instead of failing on DuckDB's file lock.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from dbt.adapters.duckdb.plugins import BasePlugin

from connectors.warehouse.lock import hold_until_exit
from connectors.warehouse.schema import apply_ddl


def _local_path(path: str | None) -> Path | None:
    if not path or path == ":memory:" or ":" in path.split("/", 1)[0]:
        return None  # in memory, or md:/s3: style URLs
    return Path(path)


class Plugin(BasePlugin):
    """Creates the folder, the raw schema and tables, and keeps the DuckDB file 0600."""

    def update_connection_config(self, creds: Any, config: dict[str, Any]) -> None:
        path = _local_path(getattr(creds, "path", None))
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Plain `dbt build` takes pacs2xnat's writer lock (waiting, bounded, for a loader's
            # short transaction) and keeps it until dbt exits; inside pacs2xnat, run_dbt
            # already holds it.
            hold_until_exit(path, "dbt " + " ".join(sys.argv[1:2]))

    def configure_connection(self, conn: Any) -> None:
        apply_ddl(conn)
        path = _local_path(getattr(self.creds, "path", None))
        if path is not None and path.exists():
            with contextlib.suppress(OSError):
                os.chmod(path, 0o600)
