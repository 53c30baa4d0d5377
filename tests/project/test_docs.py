"""It keeps README.md true: the two commands, every CLI command, every config key, and every
command line it shows parsed against the real Typer app (an option that does not exist fails)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import fields
from typing import Any

import pytest
import typer
import typer.core
import typer.main

from connectors import PROJECT_ROOT
from connectors.app.cli import app
from connectors.config import SECTIONS
from connectors.seams.typer_parse import parse_command_line

README = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
SETUP_DEMO = "scripts/setup && .venv/bin/pacs2xnat demo"
SETUP_TEST = "scripts/setup --test && .venv/bin/python -m pytest"


def test_readme_gives_the_two_commands() -> None:
    assert SETUP_DEMO in README
    assert SETUP_TEST in README


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci = (PROJECT_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert SETUP_TEST in ci


def test_readme_names_every_command() -> None:
    for cmd in re.findall(r"^@(?:app|patients_app|rules_app)\.command\(\"?([a-z-]*)", _cli(), re.M):
        if cmd:
            assert f"{cmd}" in README, cmd
    for cmd in (
        "init",
        "doctor",
        "query",
        "build",
        "export",
        "load",
        "sync",
        "failures",
        "report",
        "run",
        "demo",
        "demo serve",
        "patients import",
        "rules import",
        "rules export",
    ):
        assert f"pacs2xnat {cmd}" in README, cmd


def test_readme_documents_every_config_key() -> None:
    for section, cls in SECTIONS.items():
        assert f"[{section}]" in README, section
        for f in fields(cls):
            assert re.search(rf"^\s*#?\s*{f.name}\s*=", README, re.M), f"[{section}] {f.name}"


def _cli() -> str:
    return (PROJECT_ROOT / "connectors" / "app" / "cli.py").read_text(encoding="utf-8")


# ------------------------------------------------------ every command line the README shows

#: A sample value for each placeholder the README's synopses use (``--since D``, ``FILE``...).
#: A new placeholder fails the test below until it has one here.
PLACEHOLDERS = {
    "FILE": "list.xlsx",
    "FILE.xlsx": "rules.xlsx",
    "DIR": "out",
    "D": "2026-01-01",
    "N": "3",
    "S": "7",
    "M": "RA000001",
    "NAME": "someone",
    "STEP": "export",
}
#: ``pacs2xnat`` in a command position of a shell line: start, after ``&&``, ``;``, ``|``, ``$``.
_SHELL_COMMAND = re.compile(
    r"(?:^|&&|\|\||;|\||\$)\s*(?:[\w./-]*/)?pacs2xnat\b(?P<args>[^&;|#\n]*)", re.M
)


def readme_command_lines() -> list[str]:
    """Every ``pacs2xnat …`` command line in README.md: inline code spans and shell lines in
    code blocks, synopses expanded (``[--x]`` taken, ``a|b`` once per alternative, ``…``
    dropped, placeholders given a sample value)."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", README, re.M | re.S)
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", README, flags=re.M | re.S)
    lines = [m.group(0) for m in re.finditer(r"`pacs2xnat(?: [^`]*)?`", prose)]
    lines = [s.strip("`").removeprefix("pacs2xnat") for s in lines]
    lines += [m.group("args") for b in blocks for m in _SHELL_COMMAND.finditer(b)]
    return sorted({line for s in lines for line in _expand(s.strip()) if line})


def _expand(synopsis: str) -> list[str]:
    words = synopsis.replace("[", " ").replace("]", " ").replace("…", " ").split()
    lines: list[list[str]] = [[]]
    for word in words:
        alternatives = word.split("|") if "|" in word else [word]
        lines = [[*line, alt] for line in lines for alt in alternatives]
    return [" ".join(PLACEHOLDERS.get(w, w) for w in line) for line in lines]


def test_the_readme_shows_command_lines() -> None:
    lines = readme_command_lines()
    assert "demo" in lines
    assert "load --mode dqr --limit 3 --dry-run" in lines
    assert len(lines) >= 20, lines


@pytest.mark.parametrize("line", readme_command_lines())
def test_every_command_line_in_the_readme_parses(line: str) -> None:
    """An option the README promises that the app does not have fails here, as the user's shell
    would: ``No such option: --patients``."""
    for word in shlex.split(line):
        assert not re.fullmatch(r"[A-Z][A-Z_.]*", word), f"{word}: add a sample to PLACEHOLDERS"
    try:
        ctx = parse_command_line(typer.main.get_command(app), shlex.split(line))
    except typer.TyperException as e:
        pytest.fail(f"README: `pacs2xnat {line}`: {e.format_message()}")
    assert ctx.command.name in line.split(), line


def test_every_option_the_readme_names_exists(pytestconfig: pytest.Config) -> None:
    """A bare option span (``--until export``, ``--keep DIR``) names an option of some command,
    or of the acceptance run's pytest (``--xnat-dqr``, registered by ``tests/support``)."""
    named = {m.split()[0] for m in re.findall(r"`(--[a-z][^`]*)`", README)}
    named |= {
        w for m in re.findall(r"`pacs2xnat [^`]*`", README) for w in re.findall(r"--[a-z-]+", m)
    }
    assert named, "the README names no option"
    known = set(_options(typer.main.get_command(app)))
    unknown = {o for o in named - known if not _pytest_option(pytestconfig, o)}
    assert unknown == set(), f"README names options the app does not have: {unknown}"


def _pytest_option(config: pytest.Config, option: str) -> bool:
    try:
        config.getoption(option)
    except ValueError:
        return False
    return True


def _options(command: Any) -> Iterator[str]:
    for p in command.params:
        yield from (o for o in (*p.opts, *p.secondary_opts) if o.startswith("--"))
    if isinstance(command, typer.core.TyperGroup):
        for sub in command.commands.values():
            yield from _options(sub)
