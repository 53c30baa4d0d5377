"""It writes one owner-only log per run and keeps secrets out of it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from connectors import console
from connectors.app.cli import app


@pytest.mark.slow
def test_each_run_writes_an_owner_only_log(workspace: Path) -> None:
    res = CliRunner().invoke(app, ["build"])
    assert res.exit_code == 0, res.output
    logs = list((workspace / "warehouse" / "logs").glob("*-build.log"))
    assert len(logs) == 1
    assert oct(logs[0].stat().st_mode & 0o777) == "0o600"
    assert oct(logs[0].parent.stat().st_mode & 0o777) == "0o700"


def test_a_password_logged_by_a_library_is_redacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XNAT_PASS", "s3cret-Pa55")
    log = tmp_path / "run.log"
    console.setup_logging(log, verbose=False)
    try:
        logging.getLogger("urllib3.connectionpool").warning(
            "POST http://svc:%s@xnat/data/services/auth", "s3cret-Pa55"
        )
        logging.getLogger("connectors.x").info("password=s3cret-Pa55 in a message")
    finally:
        console.setup_logging(None, verbose=False)
    text = log.read_text()
    assert "s3cret-Pa55" not in text
    assert text.count("***") == 2
