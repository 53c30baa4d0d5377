"""``pacs2xnat warehouse ...``: moving a team's warehouse (``warehouse copy``)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from connectors import console
from connectors.app.invocation import exit_codes, invocation
from connectors.app.wait_option import WaitGroup
from connectors.errors import ConfigError

warehouse_app = typer.Typer(
    cls=WaitGroup, help="The warehouse itself: moving it.", no_args_is_help=True
)


@warehouse_app.command("copy")
def warehouse_copy(
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="The empty PostgreSQL warehouse, postgresql://[user@]host[:port]/db "
            "(password from PGPASSWORD or ~/.pgpass, never here).",
        ),
    ],
) -> None:
    """Copy the DuckDB file's raw schema into an empty PostgreSQL warehouse, checked by row
    counts and a hash per table (the marts are rebuilt there by `pacs2xnat build`).

    Example: pacs2xnat warehouse copy --to postgresql://pacs2xnat@db.example:5432/pacs2xnat
    """
    from connectors.config import check_postgres_url
    from connectors.warehouse.copy import copy_to_postgres
    from connectors.warehouse.postgres import PostgresWarehouse

    with exit_codes():  # before the run is recorded: a password must never reach raw.runs
        check_postgres_url(to, "--to")
    with invocation("warehouse copy") as rc:
        if rc.settings.warehouse.url:
            raise ConfigError(
                "warehouse copy reads the DuckDB file ([warehouse] path); "
                "[warehouse] url is set: this configuration already uses PostgreSQL"
            )
        checks = copy_to_postgres(rc.warehouse, PostgresWarehouse(to), skip_run=rc.run_id)
        table = Table("raw table", "rows", "sha256 (both sides)")
        for c in checks:
            table.add_row(c.table, str(c.rows), c.sha256[:16])
        if not console.json_mode():
            console.show(table)
            console.say(
                f'copied; set [warehouse] url = "{to}" in pacs2xnat.toml, then pacs2xnat build'
            )
        rc.summary.update(
            {"to": to, "tables": {c.table: {"rows": c.rows, "sha256": c.sha256} for c in checks}}
        )
