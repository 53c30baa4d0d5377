"""It has a help text for every command, an example line in each, and maps errors to exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from connectors.app.cli import app, run_in_process
from connectors.errors import StepFailed


def _commands() -> list[list[str]]:
    out: list[list[str]] = []
    import typer.main

    click_app = typer.main.get_command(app)

    def walk(cmd, prefix):  # type: ignore[no-untyped-def]
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, [*prefix, name])
        if prefix and (not subs or prefix == ["demo"]):
            out.append(prefix)

    walk(click_app, [])
    return out


def test_help_exits_zero() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "connectors.app.cli", "--help"], capture_output=True, text=True
    )
    assert res.returncode == 0
    assert "pacs2xnat" in res.stdout


def test_every_command_has_help_with_an_example(cli: CliRunner) -> None:
    for cmd in _commands():
        res = cli.invoke(app, [*cmd, "--help"])
        assert res.exit_code == 0, (cmd, res.output)
        assert "Example: pacs2xnat" in res.output, cmd


def test_bad_config_is_exit_2_naming_file_and_key(workspace: Path, cli: CliRunner) -> None:
    (workspace / "pacs2xnat.toml").write_text("[pacs]\nport = 'x'\n")
    res = cli.invoke(app, ["build"])
    assert res.exit_code == 2
    assert "pacs2xnat.toml: [pacs] port must be a whole number, got 'x'" in res.output


@pytest.mark.slow
def test_build_on_empty_warehouse_records_its_run(workspace: Path, cli: CliRunner) -> None:
    res = cli.invoke(app, ["build"])
    assert res.exit_code == 0, res.output
    db = workspace / "warehouse" / "pacs2xnat.duckdb"
    assert oct(db.stat().st_mode & 0o777) == "0o600"
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("select command, outcome, exit_code from raw.runs").fetchall()
        assert rows == [("build", "success", 0)]
        assert con.execute("select count(*) from staging.stg_pacs__studies").fetchone() == (0,)
        assert con.execute("select count(*) from main.ingest_manifest").fetchone() == (0,)


def test_run_in_process_returns_the_exit_code_and_refuses_a_bad_command_line(
    workspace: Path,
) -> None:
    """The demo runs its steps this way and stops on a step that fails: the code must be the
    command's own (2 for a missing file), and a bad command line an error naming it."""
    config = workspace / "pacs2xnat.toml"
    assert run_in_process(config, "patients", "import", str(workspace / "missing.xlsx")) == 2
    assert run_in_process(config, "rules", "export", str(workspace / "rules.xlsx")) == 0
    assert (workspace / "rules.xlsx").is_file()
    with pytest.raises(StepFailed, match="No such option: --nope"):
        run_in_process(config, "build", "--nope")
