"""Shared fixtures. Real parts only: a real DuckDB file, real dbt, real files on disk.

The PACS fixtures (Orthanc, dcmqrscp, the in-process SCP) live in ``tests/pacs_fixtures.py``
and the XNAT stand-in fixtures in ``tests/xnat_fixtures.py``; both are registered here.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from connectors import PROJECT_ROOT
from connectors.dbt import copy_project

pytest_plugins = [
    p
    for p in ("tests.pacs_fixtures", "tests.xnat_fixtures", "tests.fault_helpers")
    if (PROJECT_ROOT / (p.replace(".", "/") + ".py")).is_file()
]


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder holding a copy of the dbt project and a pacs2xnat.toml; the cwd of the test."""
    ws = copy_project(tmp_path / "ws")
    (ws / "pacs2xnat.toml").write_text('[warehouse]\npath = "warehouse/pacs2xnat.duckdb"\n')
    monkeypatch.chdir(ws)
    monkeypatch.delenv("PACS2XNAT_CONFIG", raising=False)
    monkeypatch.delenv("PACS2XNAT_WAREHOUSE", raising=False)
    return ws


@pytest.fixture
def cli() -> CliRunner:
    return CliRunner()


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_binary(path: str, package: str) -> str:
    """The path of a Debian-packaged program; skip when absent, but fail under CI=true."""
    found = shutil.which(path) or (
        path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    )
    if found:
        return found
    message = f"{path} not found: apt-get install {package} (scripts/setup --test does)"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)
    raise AssertionError("unreachable")
