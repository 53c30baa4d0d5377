"""The ``pacs2xnat`` command. Each command is thin: parse, load config, call one function.

Errors become exit codes in one place (``_exit_codes``): ``InputError``/``ConfigError`` -> 2,
``Unavailable`` (PACS, XNAT, a busy warehouse) -> 3; "finished with recorded failures" is a
return value (-> 1). stdout carries data (``--json``, tables); stderr carries messages.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from connectors import console
from connectors.config import Settings, load_settings
from connectors.errors import EXIT_OK, EXIT_SOME_FAILED, Pacs2XnatError
from connectors.runs import RunContext

app = typer.Typer(
    name="pacs2xnat",
    help="Quarterly PACS -> XNAT ingestion of the head-and-neck cancer imaging cohort.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # a traceback must never print a password
    add_completion=False,
)
patients_app = typer.Typer(help="The master patient list.", no_args_is_help=True)
rules_app = typer.Typer(
    help="The include/exclude rules on study descriptions.", no_args_is_help=True
)
demo_app = typer.Typer(
    help="The whole cycle on a synthetic cohort, a demo PACS and a stand-in XNAT.\n\n"
    "Example: pacs2xnat demo --patients 40",
    invoke_without_command=True,
)
app.add_typer(patients_app, name="patients")
app.add_typer(rules_app, name="rules")
app.add_typer(demo_app, name="demo")


@dataclass
class _State:
    config_path: Path | None = None
    settings: Settings | None = None


_state = _State()


@contextlib.contextmanager
def _exit_codes() -> Iterator[None]:
    """The one place where our exceptions become messages and exit codes."""
    try:
        yield
    except Pacs2XnatError as e:
        console.error(str(e))
        raise typer.Exit(e.exit_code) from None


def settings() -> Settings:
    if _state.settings is None:
        with _exit_codes():
            _state.settings = load_settings(_state.config_path)
    return _state.settings


@contextlib.contextmanager
def invocation(command: str) -> Iterator[RunContext]:
    """One recorded run: lock the warehouse, write ``raw.runs``, open the run's log file,
    map errors to exit codes, print the ``--json`` summary, finish the runs row."""
    rc = RunContext(settings=settings(), command=command, arguments=sys.argv[1:])
    with _exit_codes():
        rc.start()
    console.setup_logging(
        rc.settings.warehouse_dir / "logs" / f"{rc.run_id}-{command.replace(' ', '-')}.log",
        console.verbose(),
    )
    exit_code = EXIT_OK
    try:
        with _exit_codes():
            yield rc
        exit_code = int(rc.summary.get("exit_code", EXIT_OK))
    except typer.Exit as e:
        exit_code = e.exit_code
        raise
    except KeyboardInterrupt:
        exit_code = 130
        raise
    except BaseException:
        exit_code = 1
        raise
    finally:
        outcome = {EXIT_OK: "success", EXIT_SOME_FAILED: "partial"}.get(exit_code, "failed")
        with contextlib.suppress(Pacs2XnatError):
            rc.finish(outcome, exit_code)
        if console.json_mode() and exit_code in (EXIT_OK, EXIT_SOME_FAILED):
            console.out.print_json(json.dumps({"run_id": rc.run_id, **rc.summary}, default=str))
    if exit_code != EXIT_OK:
        raise typer.Exit(exit_code)


# --------------------------------------------------------------------------- app callback

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="Config file (else $PACS2XNAT_CONFIG, else ./pacs2xnat.toml)."
    ),
]


@app.callback()
def _main(
    config: ConfigOpt = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="DICOM/HTTP detail in the log.")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bars or messages.")
    ] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print a machine-readable summary.")
    ] = False,
) -> None:
    """pacs2xnat: query PACS, select and link studies, load them into XNAT, report what is there."""
    _state.config_path = config
    _state.settings = None
    console.configure(quiet=quiet, json_mode=json_out, verbose=verbose)


def _not_built(issue: int) -> None:
    raise typer.Exit(_fail(f"this command is not built yet (issue #{issue})"))


def _fail(message: str) -> int:
    console.error(message)
    return 2


# --------------------------------------------------------------------------- commands


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the config.")] = Path(
        "pacs2xnat.toml"
    ),
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented pacs2xnat.toml with every setting at its default.

    Example: pacs2xnat init
    """
    from connectors.config import write_template

    with _exit_codes():
        written = write_template(path, force=force)
    console.say(f"wrote {written}: edit [pacs] and [xnat], then run pacs2xnat doctor")


@app.command()
def doctor() -> None:
    """Check config, PACS (C-ECHO, C-FIND, retrieve path), XNAT login and project, warehouse, dbt.

    Example: pacs2xnat doctor
    """
    from connectors.doctor import print_checks, run_checks

    code = print_checks(run_checks(settings()))
    if code:
        raise typer.Exit(code)


@patients_app.command("import")
def patients_import(
    file: Annotated[Path, typer.Argument(help="Master patient list (.xlsx or .csv).")],
) -> None:
    """Import the master patient list into raw.master_patients (repairing Excel damage).

    Example: pacs2xnat patients import master_list.xlsx
    """
    from connectors.spreadsheets import import_master_list

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
    from connectors.rules import import_rules_workbook

    with invocation("rules import") as rc:
        rc.summary.update(import_rules_workbook(rc, file, decided_by=decided_by))


@rules_app.command("export")
def rules_export(
    file: Annotated[Path, typer.Argument(help="Workbook to write (sheets INCLUDE and EXCLUDE).")],
) -> None:
    """Write the rules seed as the INCLUDE/EXCLUDE workbook the team keeps.

    Example: pacs2xnat rules export study_descriptions.xlsx
    """
    from connectors.rules import export_rules_workbook

    with invocation("rules export") as rc:
        rc.summary.update(export_rules_workbook(rc, file))


@app.command()
def query(
    since: Annotated[
        dt.datetime | None, typer.Option(formats=["%Y-%m-%d"], help="Override the window start.")
    ] = None,
    until: Annotated[
        dt.datetime | None, typer.Option(formats=["%Y-%m-%d"], help="Override the window end.")
    ] = None,
    mrn: Annotated[list[str] | None, typer.Option(help="Only these patients (repeatable).")] = None,
) -> None:
    """C-FIND every due patient's studies on PACS into raw.pacs_studies.

    Example: pacs2xnat query --since 2026-01-01
    """
    from connectors.query import run_query

    with invocation("query") as rc:
        rc.summary.update(
            run_query(
                rc,
                since=since.date() if since else None,
                until=until.date() if until else None,
                mrns=mrn or (),
            )
        )


@app.command()
def build() -> None:
    """Run dbt build (seeds, unit tests, models, data tests) on the warehouse.

    Example: pacs2xnat build
    """
    from connectors.dbt import build as dbt_build

    with invocation("build") as rc:
        result = dbt_build(
            project_dir=rc.project_dir,
            warehouse_path=rc.settings.warehouse_path,
            quiet=not console.verbose(),
        )
        rc.summary.update({"dbt": result.counts})
        console.say(f"dbt build: {_counts(result.counts)}")


@app.command()
def export(
    file: Annotated[
        Path | None,
        typer.Argument(help="CSV to write (default warehouse/exports/…); - for stdout."),
    ] = None,
) -> None:
    """Write the ingest CSV (what CSC receives) from the ingest_manifest mart.

    Example: pacs2xnat export ingest.csv
    """
    from connectors.export import export_ingest_csv

    with invocation("export") as rc:
        rc.summary.update(export_ingest_csv(rc, file))


@app.command()
def load(
    mode: Annotated[str | None, typer.Option(help="direct or dqr (default from config).")] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Load at most N studies (a trial).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be loaded.")] = False,
) -> None:
    """Load the manifest's studies into XNAT (idempotent, resumable).

    Example: pacs2xnat load --limit 5
    """
    from connectors.load import run_load

    with invocation("load") as rc:
        rc.summary.update(run_load(rc, mode, limit, dry_run))


@app.command()
def sync() -> None:
    """Read back every imaging session of the XNAT project into raw.xnat_sessions.

    Example: pacs2xnat sync
    """
    from connectors.sync import run_sync

    with invocation("sync") as rc:
        rc.summary.update(run_sync(rc))


@app.command()
def failures(
    retry: Annotated[
        bool, typer.Option("--retry", help="Load the retryable failures again.")
    ] = False,
    csv: Annotated[
        Path | None, typer.Option("--csv", help="Also write the register as CSV.")
    ] = None,
) -> None:
    """Print the open failure register; --retry loads the retryable ones again.

    Example: pacs2xnat failures --csv failures.csv
    """
    from connectors.failures import retry_failures, show_failures

    with invocation("failures retry" if retry else "failures") as rc:
        rc.summary.update(show_failures(rc, csv))
        if retry:
            rc.summary["retry"] = retry_failures(rc, built=True)
            if "exit_code" in rc.summary["retry"]:
                rc.summary["exit_code"] = rc.summary["retry"]["exit_code"]


@app.command()
def report(
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder (default warehouse/reports).")
    ] = None,
) -> None:
    """Write the data-availability workbook and HTML page.

    Example: pacs2xnat report --out reports/
    """
    from connectors.report import run_report

    with invocation("report") as rc:
        rc.summary.update(run_report(rc, out))
        console.say(f"report: {rc.summary['workbook']}, {rc.summary['html']}")


@app.command()
def run(
    until: Annotated[
        str | None,
        typer.Option(
            help="Stop after this step: query, build, export, load, sync, rebuild, report."
        ),
    ] = None,
    restart: Annotated[
        bool, typer.Option(help="Start from the query, ignoring an unfinished run.")
    ] = False,
) -> None:
    """The whole cycle: query, build, export, load, sync, build, report.

    Example: pacs2xnat run --until export
    """
    from connectors.cycle import run_cycle

    with invocation("run") as rc:
        run_cycle(rc, until=until, restart=restart)


@demo_app.callback()
def demo(
    ctx: typer.Context,
    patients: Annotated[int, typer.Option(min=1, help="Synthetic cohort size.")] = 40,
    seed: Annotated[int, typer.Option(help="Random seed of the synthetic cohort.")] = 7,
    keep: Annotated[Path | None, typer.Option(help="Keep the workspace in this folder.")] = None,
) -> None:
    """Run the whole cycle on embedded defaults and print where every output is.

    Example: pacs2xnat demo --patients 40
    """
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"patients": patients, "seed": seed}
        return
    from connectors.demo import run_demo

    with _exit_codes():
        summary = run_demo(patients=patients, seed=seed, keep=keep)
    if console.json_mode():
        console.out.print_json(json.dumps(summary, default=str))


@demo_app.command("serve")
def demo_serve(
    ctx: typer.Context,
    json_line: Annotated[
        bool, typer.Option("--json", help="Print one JSON line once both answer.")
    ] = False,
) -> None:
    """Start the demo PACS and the stand-in XNAT and wait, printing their addresses.

    Example: pacs2xnat demo serve --json
    """
    from connectors.demo import serve

    opts = ctx.obj or {}
    with _exit_codes():
        serve(patients=opts.get("patients", 40), seed=opts.get("seed", 7), json_line=json_line)


def _counts(counts: dict[str, Any]) -> str:
    return ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "nothing to do"


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
