"""The admin's sub-commands (``patients``, ``rules``): thin, like every command in ``cli``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from connectors.app.invocation import invocation
from connectors.app.wait_option import WaitGroup

patients_app = typer.Typer(cls=WaitGroup, help="The master patient list.", no_args_is_help=True)
rules_app = typer.Typer(
    cls=WaitGroup, help="The include/exclude rules on study descriptions.", no_args_is_help=True
)


@patients_app.command("import")
def patients_import(
    file: Annotated[Path, typer.Argument(help="Master patient list (.xlsx or .csv).")],
) -> None:
    """Import the master patient list into raw.master_patients (repairing Excel damage).

    Example: pacs2xnat patients import master_list.xlsx
    """
    from connectors.admin.master_list import import_master_list

    with invocation("patients import") as rc:
        rc.summary.update(import_master_list(rc, file))


@rules_app.command("import")
def rules_import(
    file: Annotated[Path, typer.Argument(help="Workbook with sheets INCLUDE and EXCLUDE.")],
    decided_by: Annotated[
        str | None, typer.Option(help="Who decided (default: your user name).")
    ] = None,
) -> None:
    """Merge the INCLUDE/EXCLUDE workbook into seeds/study_description_rules.csv.

    Example: pacs2xnat rules import study_descriptions.xlsx
    """
    from connectors.admin.rules import import_rules_workbook

    with invocation("rules import") as rc:
        rc.summary.update(import_rules_workbook(rc, file, decided_by=decided_by))


@rules_app.command("export")
def rules_export(
    file: Annotated[Path, typer.Argument(help="Workbook to write (sheets INCLUDE and EXCLUDE).")],
) -> None:
    """Write the rules seed as the INCLUDE/EXCLUDE workbook the team keeps.

    Example: pacs2xnat rules export study_descriptions.xlsx
    """
    from connectors.admin.rules import export_rules_workbook

    with invocation("rules export") as rc:
        rc.summary.update(export_rules_workbook(rc, file))
