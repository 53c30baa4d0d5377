"""dbt-duckdb keeps one DuckDB instance per process in ``DuckDBConnectionManager._ENV``
(guarded by ``_LOCK``) after a run; closing it lets the connectors, and other processes such as
an analyst's SQL client, open the warehouse file again."""

from __future__ import annotations


def release_duckdb_environment() -> None:
    """Close the DuckDB instance dbt-duckdb keeps open in this process, if any."""
    try:
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    except ImportError:  # pragma: no cover - dbt-duckdb is a dependency
        return
    with DuckDBConnectionManager._LOCK:
        env = DuckDBConnectionManager._ENV
        DuckDBConnectionManager._ENV = None
    if env is not None:
        close = getattr(env, "close", None)
        if close is not None:
            close()
