"""Which warehouse a configuration names: the DuckDB file (``[warehouse] path``) or, when
``[warehouse] url`` is set, the shared PostgreSQL database."""

from __future__ import annotations

from connectors.config import Settings
from connectors.warehouse.store import Warehouse


def open_warehouse(settings: Settings) -> Warehouse:
    """The configured warehouse (nothing is connected until ``connect()``). PostgreSQL's
    module is imported only when it is the one: psycopg is ~0.2 s of every command's start-up
    (``python -X importtime``), on the DuckDB file's commands too."""
    if settings.warehouse.url:
        from connectors.warehouse.postgres import PostgresWarehouse

        return PostgresWarehouse(settings.warehouse.url, settings.warehouse_dir)
    return Warehouse(settings.warehouse_path)


__all__ = ["open_warehouse"]
