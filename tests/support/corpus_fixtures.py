"""The real-world-like corpus (``connectors/testbed/corpus.py``) and real PACS holding it (a
pytest plugin registered by tests/conftest.py); all session-scoped, built once per session.

- ``corpus``: 4 studies × 6–7 instances, every SOP class family and transfer syntax there.
- ``corpus_orthanc``: a real Orthanc holding it (C-MOVE destination ``CORPUS_MOVE_AET`` at
  ``corpus_move_port``; its DICOMweb plugin at ``dicomweb_url``); ``corpus_dcmqrscp``:
  dcmtk's dcmqrscp holding it, same destination.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.testbed.corpus import CorpusInstance, build_corpus
from connectors.testbed.dcmqrscp import Dcmqrscp
from connectors.testbed.orthanc import ORTHANC_BINARY, Orthanc, free_port
from tests.support.real_parts import require_binary

CORPUS_MOVE_AET = "P2X_CORPUS"


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[CorpusInstance]:
    for tool in ("dcmconv", "dcmcjpeg", "dcmcjpls", "dcmcrle"):
        require_binary(tool, "dcmtk")
    return build_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def corpus_move_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def corpus_orthanc(
    corpus: list[CorpusInstance], corpus_move_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Orthanc]:
    require_binary(ORTHANC_BINARY, "orthanc")
    server = Orthanc(
        tmp_path_factory.mktemp("corpus_orthanc"),
        modalities={CORPUS_MOVE_AET: (CORPUS_MOVE_AET, "127.0.0.1", corpus_move_port)},
        dicomweb=True,  # WADO-RS too (Debian's orthanc-dicomweb)
    )
    server.start()
    try:
        server.upload(i.path for i in corpus)
        yield server
    finally:
        server.stop(timeout=0)


@pytest.fixture(scope="session")
def corpus_dcmqrscp(
    corpus: list[CorpusInstance], corpus_move_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Dcmqrscp]:
    require_binary("dcmqrscp", "dcmtk")
    server = Dcmqrscp(
        tmp_path_factory.mktemp("corpus_dcmqrscp"),
        peers={CORPUS_MOVE_AET: ("127.0.0.1", corpus_move_port)},
    )
    server.add_files(i.path for i in corpus)
    server.start()
    try:
        yield server
    finally:
        server.stop()
