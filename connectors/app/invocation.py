"""One invocation of a command: its settings, its run record, and the one place where our
exceptions become messages and exit codes (``exit_codes``): ``InputError``/``ConfigError`` -> 2,
``Unavailable`` (PACS, XNAT, a busy warehouse) -> 3; "finished with recorded failures" is a
return value (-> 1)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import typer

from connectors import console
from connectors.config import Settings, load_settings
from connectors.errors import EXIT_OK, EXIT_SOME_FAILED, Pacs2XnatError
from connectors.outputs.notify import Notifier
from connectors.warehouse.runs import RunContext


@dataclass
class State:
    config_path: Path | None = None
    settings: Settings | None = None


state = State()


@contextlib.contextmanager
def exit_codes() -> Iterator[None]:
    """The one place where our exceptions become messages and exit codes."""
    try:
        yield
    except Pacs2XnatError as e:
        console.error(str(e))
        raise typer.Exit(e.exit_code) from None


def settings() -> Settings:
    if state.settings is None:
        with exit_codes():
            state.settings = load_settings(state.config_path)
    return state.settings


def no_wait_override(no_wait: bool) -> None:
    """``--no-wait`` overrides ``[pacs] wait_for_window`` for this invocation."""
    if no_wait:
        s = settings()
        pacs = dataclasses.replace(s.pacs, wait_for_window=False)
        state.settings = dataclasses.replace(s, pacs=pacs)


@contextlib.contextmanager
def invocation(command: str) -> Iterator[RunContext]:
    """One recorded run: lock the warehouse, write ``raw.runs``, open the run's log file,
    map errors to exit codes, print the ``--json`` summary, finish the runs row."""
    rc = RunContext(settings=settings(), command=command, arguments=sys.argv[1:])
    with exit_codes():
        rc.start()
    console.setup_logging(
        rc.settings.warehouse_dir / "logs" / f"{rc.run_id}-{command.replace(' ', '-')}.log",
        console.verbose(),
    )
    exit_code = EXIT_OK
    notifier = Notifier.for_command(rc.settings, command, rc.run_id)  # [notify]: run, load
    try:
        with exit_codes(), notifier.watching():
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
        if outcome != "failed" and rc.summary.get("paused_until"):
            outcome = "paused"  # outside the PACS windows (--no-wait): the next run continues
        with contextlib.suppress(Pacs2XnatError):
            rc.finish(outcome, exit_code)
        notifier.finished(exit_code, rc.summary)  # never raises
        if console.json_mode() and exit_code in (EXIT_OK, EXIT_SOME_FAILED):
            console.out.print_json(json.dumps({"run_id": rc.run_id, **rc.summary}, default=str))
    if exit_code != EXIT_OK:
        raise typer.Exit(exit_code)
