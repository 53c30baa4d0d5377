"""The ``pacs2xnat`` command. Each command is thin: parse, load config, call one function.

Errors become exit codes in one place (``invocation.exit_codes``): ``InputError`` and
``ConfigError`` -> 2, ``Unavailable`` (PACS, XNAT, a busy warehouse) -> 3; "finished with
recorded failures" is a return value (-> 1). stdout carries data (``--json``, tables); stderr
carries messages.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from connectors import console
from connectors.app.cli_admin import patients_app, rules_app
from connectors.app.invocation import exit_codes, invocation, no_wait_override, settings, state
from connectors.app.wait_option import WaitGroup, wait_option
from connectors.app.warehouse_cli import warehouse_app
from connectors.errors import EXIT_OK, StepFailed
from connectors.warehouse.lock import set_wait

app = typer.Typer(
    cls=WaitGroup,  # every command takes --wait SECONDS too (wait_option.py)
    name="pacs2xnat",
    help="Quarterly PACS -> XNAT ingestion of the head-and-neck cancer imaging cohort.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # a traceback must never print a password
    add_completion=False,
)
demo_app = typer.Typer(
    help="The whole cycle on a synthetic cohort, a demo PACS and a stand-in XNAT.\n\n"
    "Example: pacs2xnat demo --patients 40",
    invoke_without_command=True,
)
app.add_typer(patients_app, name="patients")
app.add_typer(rules_app, name="rules")
app.add_typer(demo_app, name="demo")
app.add_typer(warehouse_app, name="warehouse")


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
    wait: Annotated[float | None, wait_option()] = None,
) -> None:
    """pacs2xnat: query PACS, select and link studies, load them into XNAT, report what is there."""
    state.config_path = config
    state.settings = None
    console.configure(quiet=quiet, json_mode=json_out, verbose=verbose)
    set_wait(wait)


# --------------------------------------------------------------------------- commands

NoWaitOpt = Annotated[
    bool,
    typer.Option(
        "--no-wait", help="Outside the [pacs] windows stop (a rerun continues) instead of waiting."
    ),
]


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

    with exit_codes():
        written = write_template(path, force=force)
    console.say(f"wrote {written}: edit [pacs] and [xnat], then run pacs2xnat doctor")


@app.command()
def doctor() -> None:
    """Check config, PACS (C-ECHO, C-FIND, retrieve path), XNAT login and project, warehouse, dbt.

    Example: pacs2xnat doctor
    """
    from connectors.app.doctor import print_checks, run_checks

    code = print_checks(run_checks(settings()))
    if code:
        raise typer.Exit(code)


@app.command()
def query(
    since: Annotated[
        dt.datetime | None, typer.Option(formats=["%Y-%m-%d"], help="Override the window start.")
    ] = None,
    until: Annotated[
        dt.datetime | None, typer.Option(formats=["%Y-%m-%d"], help="Override the window end.")
    ] = None,
    mrn: Annotated[list[str] | None, typer.Option(help="Only these patients (repeatable).")] = None,
    no_wait: NoWaitOpt = False,
) -> None:
    """C-FIND every due patient's studies on PACS into raw.pacs_studies.

    Example: pacs2xnat query --since 2026-01-01
    """
    from connectors.pacs.query import run_query

    no_wait_override(no_wait)
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
def build(
    with_unit_tests: Annotated[
        bool, typer.Option("--with-unit-tests", help="Also run dbt's unit tests of the SQL rules.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Build even if nothing changed since the last build.")
    ] = False,
) -> None:
    """Run dbt build (seeds, models, data tests) on the warehouse, if anything changed.

    Example: pacs2xnat build --with-unit-tests
    """
    from connectors.warehouse.builds import Selection, refresh

    with invocation("build") as rc:
        selection = Selection(unit_tests=with_unit_tests)
        result = refresh(rc, selection, force=force, quiet=not console.verbose())
        rc.summary.update({"dbt": result.counts, "skipped": result.skipped})
        if result.skipped:
            console.say("dbt build: nothing changed since the last build (--force builds anyway)")
        else:
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
    from connectors.outputs.export import export_ingest_csv

    with invocation("export") as rc:
        rc.summary.update(export_ingest_csv(rc, file))


@app.command()
def load(
    mode: Annotated[str | None, typer.Option(help="direct or dqr (default from config).")] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Load at most N studies (a trial).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be loaded.")] = False,
    no_wait: NoWaitOpt = False,
) -> None:
    """Load the manifest's studies into XNAT (idempotent, resumable).

    Example: pacs2xnat load --limit 5
    """
    from connectors.load.runner import run_load

    no_wait_override(no_wait)
    with invocation("load") as rc:
        rc.summary.update(run_load(rc, mode, limit, dry_run))


@app.command()
def sync() -> None:
    """Read back every imaging session of the XNAT project into raw.xnat_sessions.

    Example: pacs2xnat sync
    """
    from connectors.xnat.sync import run_sync

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
    from connectors.load.runner import retry_failures
    from connectors.outputs.failures import retryable_study_uids, show_failures

    with invocation("failures retry" if retry else "failures") as rc:
        rc.summary.update(show_failures(rc, csv))
        if retry:
            rc.summary["retry"] = retry_failures(rc, retryable_study_uids(rc))
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
    from connectors.outputs.report import run_report

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
    no_wait: NoWaitOpt = False,
) -> None:
    """The whole cycle: query, build, export, load, sync, build, report.

    Example: pacs2xnat run --until export
    """
    from connectors.app.cycle import run_cycle

    no_wait_override(no_wait)
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
    from connectors.testbed.demo import run_demo

    with exit_codes():
        summary = run_demo(run_in_process, patients=patients, seed=seed, keep=keep)
    if console.json_mode():
        console.out.print_json(json.dumps(summary, default=str))


@demo_app.command("serve")
def demo_serve(
    ctx: typer.Context,
    json_line: Annotated[
        bool, typer.Option("--json", help="Print one JSON line once both answer.")
    ] = False,
    patients: Annotated[
        int | None, typer.Option(min=1, help="Synthetic cohort size (default 40).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed of the cohort (default 7).")] = None,
) -> None:
    """Start the demo PACS and the stand-in XNAT and wait, printing their addresses.

    Example: pacs2xnat demo serve --patients 3 --json
    """
    from connectors.testbed.demo import serve

    opts = ctx.obj or {}  # `demo --patients N serve` works too
    with exit_codes():
        serve(
            patients=patients if patients is not None else opts.get("patients", 40),
            seed=seed if seed is not None else opts.get("seed", 7),
            json_line=json_line,
        )


def run_in_process(config: Path, *args: str) -> int:
    """Run one real pacs2xnat command in this process (its own run record); its exit code.
    The demo runs every step of its cycles this way."""
    import typer.main

    command = typer.main.get_command(app)
    flags = ["--config", str(config), "--quiet"]
    outer = console.snapshot()
    try:
        # Without standalone mode, main() returns the exit code a command exits with.
        code = command.main([*flags, *args], prog_name="pacs2xnat", standalone_mode=False)
    except typer.TyperException as e:  # typer's (vendored click's) usage errors
        raise StepFailed(f"pacs2xnat {' '.join(args)}: {e.format_message()}") from None
    finally:
        console.restore(outer)
    return int(code) if isinstance(code, int) else EXIT_OK


def _counts(counts: dict[str, Any]) -> str:
    return ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "nothing to do"


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
