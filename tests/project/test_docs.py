"""It keeps README.md true: the two commands, every CLI command, every config key."""

from __future__ import annotations

import re
from dataclasses import fields

from connectors import PROJECT_ROOT
from connectors.config import SECTIONS

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
