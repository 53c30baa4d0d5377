"""``--wait SECONDS`` after any command too (``pacs2xnat report --wait 60``), not only before it
(``pacs2xnat --wait 60 report``): the command's own value wins.

``WaitGroup`` is the ``cls`` of our Typer groups; every command it hands out carries one more
option, the ``--wait`` of a template command built by Typer itself (so it parses, converts and
shows in ``--help`` exactly like the global one), which sets the process's wait
(``warehouse.lock.set_wait``) while the command's arguments are parsed, after the group's own
callback set the global one and before the command runs.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
import typer.core
import typer.main

from connectors.warehouse.lock import DEFAULT_WAIT_SECONDS, WAIT_ENV, set_wait

WAIT_HELP = (
    "How long to wait for a warehouse another command is using before exit 3 "
    f"(default ${WAIT_ENV}, else {DEFAULT_WAIT_SECONDS:.0f})."
)


def wait_option(**extra: Any) -> Any:
    """The ``--wait SECONDS`` option, declared once: the global one and the commands' own."""
    return typer.Option("--wait", min=0, metavar="SECONDS", help=WAIT_HELP, **extra)


def _apply(value: float | None) -> None:
    if value is not None:
        set_wait(value)


_template = typer.Typer()


@_template.command()
def _wait_template(
    wait: Annotated[float | None, wait_option(callback=_apply, expose_value=False)] = None,
) -> None:
    """Never run: it only lends its ``--wait`` option."""


_WAIT_OPTION: Any = next(
    p for p in typer.main.get_command(_template).params if "--wait" in getattr(p, "opts", ())
)


class WaitGroup(typer.core.TyperGroup):
    """A Typer group whose commands also take ``--wait SECONDS`` (see the module)."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is None or isinstance(command, typer.core.TyperGroup):
            return command
        if not any("--wait" in getattr(p, "opts", ()) for p in command.params):
            command.params.append(_WAIT_OPTION)
        return command


__all__ = ["WaitGroup", "wait_option"]
