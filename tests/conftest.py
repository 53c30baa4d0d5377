"""Shared fixtures. Real parts only: a real DuckDB file, real dbt, real files on disk.

The PACS fixtures (Orthanc, dcmqrscp, the in-process SCP) live in
``tests/support/pacs_fixtures.py``
and the XNAT stand-in fixtures in ``tests/support/xnat_fixtures.py``; both are registered
here.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from connectors.warehouse.dbt import copy_project

pytest_plugins = [
    "tests.support.pacs_fixtures",
    "tests.support.xnat_fixtures",
    "tests.support.fault_helpers",
    "tests.support.disks",
    "tests.support.corpus_fixtures",
    "tests.support.real_xnat",
    "tests.support.pg_fixtures",
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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Collect garbage before pytest renders a failure's (or an xfail's) traceback. CPython
    3.11 (3.11.7 here; python/cpython#106905, pytest-dev/pytest#10763) can raise "AST
    constructor recursion depth mismatch" when a
    ``__del__`` run by the garbage collector in the middle of pytest's ``ast.parse`` of a source
    formats a traceback of its own (another ``ast.parse``): pytest then stops with INTERNALERROR
    and every later test is lost, as in CI once (an xnatpy session's ``__del__``, since fixed).
    Collecting first leaves no such ``__del__`` pending at that moment."""
    if call.excinfo is not None:
        gc.collect()
    yield
