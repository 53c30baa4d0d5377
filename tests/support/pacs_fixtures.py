"""PACS fixtures (a pytest plugin registered by tests/conftest.py): real Orthanc, dcmtk's
dcmqrscp and the in-process demo PACS, seeded with one synthetic cohort written as DICOM files.

- ``pacs_cohort``: the cohort (``make_cohort(PACS_COHORT_SIZE, seed=PACS_COHORT_SEED,
  as_of=PACS_AS_OF)``); ``pacs_files``: its studies as DICOM files (at most
  ``PACS_INSTANCES_PER_SERIES`` instances per series, 64×64 16-bit pixels), written once.
- ``orthanc``: a session-scoped Orthanc (TCP_NODELAY=1) holding ``pacs_files``.
- ``orthanc_factory(**kwargs)``: start more Orthancs (small, capped with ``limit_find_results``,
  ``check_called_aet=True``, ``tcp_nodelay=False``, ``modalities=...``); stopped at teardown.
- ``dcmqrscp``: a session-scoped dcmqrscp holding ``pacs_files``.
- ``demo_pacs``: the in-process SCP serving ``pacs_files``; ``demo_pacs_factory(**kwargs)`` for
  one with latency, a result cap, a failure status, C-MOVE destinations...
- ``pacs_settings(server, **pacs)``: ``Settings`` whose ``[pacs]`` points at a test-bed server.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.config import PacsConfig, Settings
from connectors.testbed.cohort import Cohort, make_cohort, raw_master_rows
from connectors.testbed.dcmqrscp import Dcmqrscp
from connectors.testbed.dicom_files import write_cohort
from connectors.testbed.orthanc import ORTHANC_BINARY, Orthanc
from connectors.testbed.pacs_scp import DemoPacs
from tests.support.real_parts import require_binary

PACS_AS_OF = dt.date(2026, 11, 1)
PACS_COHORT_SIZE = 16
PACS_COHORT_SEED = 11
PACS_INSTANCES_PER_SERIES = 3


def pacs_settings(server: Any, base: Settings | None = None, **pacs: Any) -> Settings:
    """Settings whose ``[pacs]`` section points at ``server`` (Orthanc, Dcmqrscp, DemoPacs).

    Short timeouts by default so a failing test fails fast; override any ``[pacs]`` key.
    """
    fields: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "called_aet": server.aet,
        "calling_aet": "PACS2XNAT",
        "acse_timeout": 5.0,
        "dimse_timeout": 15.0,
        "network_timeout": 15.0,
    }
    fields.update(pacs)
    base = base or Settings()
    return dataclasses.replace(base, pacs=PacsConfig(**fields))


@pytest.fixture(scope="session")
def pacs_cohort() -> Cohort:
    return make_cohort(PACS_COHORT_SIZE, seed=PACS_COHORT_SEED, as_of=PACS_AS_OF)


@pytest.fixture(scope="session")
def pacs_files(pacs_cohort: Cohort, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("pacs_dicom")
    return write_cohort(pacs_cohort, folder, max_instances_per_series=PACS_INSTANCES_PER_SERIES)


@pytest.fixture(scope="session")
def pacs_dicom_folder(pacs_files: list[Path]) -> Path:
    return pacs_files[0].parent.parent


@pytest.fixture(scope="session")
def orthanc(pacs_files: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """A real Orthanc holding the session cohort (TCP_NODELAY=1, any called AE accepted)."""
    require_binary(ORTHANC_BINARY, "orthanc")
    server = Orthanc(tmp_path_factory.mktemp("orthanc"), dicomweb=True)  # DICOMweb too
    server.start()
    try:
        server.upload(pacs_files)
        yield server
    finally:
        server.stop(timeout=0)  # throwaway storage: no need to wait for a clean shutdown


@pytest.fixture
def orthanc_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Orthanc]]:
    """Start extra Orthancs with any ``Orthanc(...)`` keyword; all stopped at teardown."""
    require_binary(ORTHANC_BINARY, "orthanc")
    started: list[Orthanc] = []

    def start(files: list[Path] | None = None, **kwargs: Any) -> Orthanc:
        server = Orthanc(tmp_path_factory.mktemp("orthanc_x"), **kwargs)
        started.append(server)
        server.start()
        if files:
            server.upload(files)
        return server

    yield start
    for server in started:
        server.stop(timeout=0)


@pytest.fixture(scope="session")
def dcmqrscp(
    pacs_files: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Dcmqrscp]:
    """dcmtk's dcmqrscp holding the session cohort (TCP_NODELAY=1)."""
    require_binary("dcmqrscp", "dcmtk")
    server = Dcmqrscp(tmp_path_factory.mktemp("dcmqrscp"))
    server.add_files(pacs_files)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def demo_pacs_factory(pacs_dicom_folder: Path) -> Iterator[Callable[..., DemoPacs]]:
    """Start in-process demo PACS (``DemoPacs(folder, **kwargs)``; folder defaults to the
    session cohort's); all stopped at teardown."""
    started: list[DemoPacs] = []

    def start(folder: Path | None = None, **kwargs: Any) -> DemoPacs:
        server = DemoPacs(folder or pacs_dicom_folder, **kwargs)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def demo_pacs(demo_pacs_factory: Callable[..., DemoPacs]) -> DemoPacs:
    """The in-process demo PACS serving the session cohort."""
    return demo_pacs_factory()


def master_patient_rows(cohort: Cohort, run_id: str = "seed-master") -> list[dict[str, Any]]:
    """``raw.master_patients`` rows for a cohort (as ``patients import`` would write them)."""
    return raw_master_rows(cohort, run_id, dt.datetime(2026, 1, 1, 9, 0, 0))


def write_query_config(workspace: Path, server: Any, **pacs: Any) -> Path:
    """A ``pacs2xnat.toml`` in ``workspace`` pointing at a test-bed PACS (short timeouts)."""
    fields: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "called_aet": server.aet,
        "acse_timeout": 5.0,
        "dimse_timeout": 15.0,
        "network_timeout": 15.0,
    }
    fields.update(pacs)
    lines = ["[warehouse]", 'path = "warehouse/pacs2xnat.duckdb"', "", "[pacs]"]
    for k, v in fields.items():
        lines.append(f"{k} = {json.dumps(v)}")
    path = workspace / "pacs2xnat.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
