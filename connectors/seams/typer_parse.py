"""Parse a ``pacs2xnat`` command line down to its leaf command without running it.

Typer (0.29) vendors its own click, and its group is not a ``click.Group``: the words left for
a sub-command after a group's own options are only in the context's private
``_protected_args``. The README's command lines are checked this way (tests/project/test_docs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import typer.core


def parse_command_line(command: Any, argv: Sequence[str], prog_name: str = "pacs2xnat") -> Any:
    """The leaf command's context (``.command``, ``.params``) for ``argv``, nothing invoked.
    A missing command, option or argument, or a bad value, raises typer's usage error (a
    ``typer.TyperException``), as the user's shell would show it."""
    ctx = command.make_context(prog_name, list(argv), resilient_parsing=False)
    while isinstance(command, typer.core.TyperGroup):
        rest = [*ctx._protected_args, *ctx.args]
        if not rest:
            break
        name, sub, args = command.resolve_command(ctx, rest)
        if sub is None or name is None:  # resolve_command raises first; kept for the types
            raise typer.BadParameter(f"no such command: {rest[0]}")
        command, ctx = sub, sub.make_context(name, args, parent=ctx, resilient_parsing=False)
    return ctx


__all__ = ["parse_command_line"]
