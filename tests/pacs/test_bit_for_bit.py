"""Bit for bit: every instance of the corpus (every SOP class family, every transfer syntax)
comes out of a real PACS as the PACS holds it, over C-GET and C-MOVE, with both back ends, and
over WADO-RS (Orthanc's DICOMweb plugin, ``transfer-syntax=*``).

Each retrieved file is compared with the file the PACS was seeded with: same SOP Instance UID,
same transfer syntax, same pixel data bytes; none missing, none extra.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pydicom
import pytest

from connectors.pacs.retrieve import RetrievalPaused, Retriever
from connectors.testbed.corpus import CorpusInstance
from tests.support.corpus_fixtures import CORPUS_MOVE_AET
from tests.support.pacs_fixtures import pacs_settings


def by_study(corpus: list[CorpusInstance]) -> dict[str, list[CorpusInstance]]:
    out: dict[str, list[CorpusInstance]] = {}
    for i in corpus:
        out.setdefault(i.study_instance_uid, []).append(i)
    return out


def differences(folder: Path, held: list[CorpusInstance]) -> list[str]:
    """What differs between the retrieved folder and what the PACS holds (empty: bit for bit)."""
    got = {}
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        got[str(ds.SOPInstanceUID)] = ds
    want = {i.sop_instance_uid: i for i in held}
    out = [f"missing {want[u].modality} {want[u].transfer_syntax_uid}" for u in want.keys() - got]
    out += [f"extra {u}" for u in got.keys() - want.keys()]
    for uid in want.keys() & got.keys():
        src, ds = pydicom.dcmread(want[uid].path), got[uid]
        ts = str(ds.file_meta.TransferSyntaxUID)
        if ts != want[uid].transfer_syntax_uid:
            out.append(f"{want[uid].modality} {want[uid].transfer_syntax_uid} arrived as {ts}")
        elif src.get("PixelData") != ds.get("PixelData"):
            out.append(f"{want[uid].modality} {ts}: pixel data differ")
    return sorted(out)


#: Debian's dcmtk 3.6.7 limits, not ours: getscu proposes one transfer syntax per SOP class
#: (no +xa, no configuration file), so the PACS must transcode or refuse the rest; dcmqrscp
#: speaks uncompressed only by default and, given compressed contexts (-xf), sends each
#: instance in the first context accepted for its class and cannot convert ("unable to
#: convert DICOM file ... from JPEG Lossless"), so its compressed instances fail either way.
GETSCU = pytest.mark.xfail(strict=True, reason="dcmtk 3.6.7 getscu: one syntax per SOP class")
DCMQRSCP = pytest.mark.xfail(strict=True, reason="dcmtk 3.6.7 dcmqrscp cannot send as stored")
CASES = [
    pytest.param("corpus_orthanc", "c-get", "pynetdicom", 1),
    pytest.param("corpus_orthanc", "c-move", "pynetdicom", 1),
    pytest.param("corpus_orthanc", "c-move", "pynetdicom", 2, id="c-move-2-workers"),
    pytest.param("corpus_orthanc", "c-move", "dcmtk", 1),
    pytest.param("corpus_orthanc", "wado-rs", "pynetdicom", 1, id="wado-rs-1"),
    pytest.param("corpus_orthanc", "wado-rs", "pynetdicom", 2, id="wado-rs-2"),
    pytest.param("corpus_orthanc", "c-get", "dcmtk", 1, marks=GETSCU),
    pytest.param("corpus_dcmqrscp", "c-get", "pynetdicom", 1, marks=DCMQRSCP),
    pytest.param("corpus_dcmqrscp", "c-move", "pynetdicom", 1, marks=DCMQRSCP),
]


@pytest.mark.slow
@pytest.mark.parametrize(("pacs", "method", "backend", "associations"), CASES)
def test_every_instance_arrives_as_the_pacs_holds_it(
    pacs: str,
    method: str,
    backend: str,
    associations: int,
    corpus: list[CorpusInstance],
    corpus_move_port: int,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    server: Any = request.getfixturevalue(pacs)
    web = {"protocol": "dicomweb", "dicomweb_url": server.dicomweb_url}
    settings = pacs_settings(
        server,
        **(web if method == "wado-rs" else {"retrieve": method}),
        retrieve_backend=backend,
        move_destination=CORPUS_MOVE_AET,
        receive_port=corpus_move_port,
        max_associations=associations,
    )
    problems: dict[str, list[str]] = {}
    with (
        Retriever(settings, move_in_processes=True) as r,
        ThreadPoolExecutor(associations) as pool,
    ):
        jobs = {
            pool.submit(r.retrieve, uid, tmp_path / str(n), len(held)): held
            for n, (uid, held) in enumerate(by_study(corpus).items())
        }
        for job, held in jobs.items():
            got = job.result()
            assert got.files == len(held)
            diff = differences(got.folder, held)
            if diff:
                problems[held[0].modality] = diff
    assert problems == {}


def _nth_look(n: int) -> Callable[[], bool]:
    """A window that ends at the ``n``-th look (and stays ended)."""
    looks = itertools.count(1)
    return lambda: next(looks) >= n


@pytest.mark.slow
@pytest.mark.parametrize("method", ["wado-rs", "c-get"])
def test_a_study_paused_part_way_and_continued_arrives_as_the_pacs_holds_it(
    method: str, corpus: list[CorpusInstance], corpus_orthanc: Any, tmp_path: Path
) -> None:
    """Each corpus study is stopped after its second instance (a window's end: WADO-RS stops
    reading, C-GET sends a C-CANCEL), then continued into the same folder: only the rest is
    asked for, and the folder holds every instance as stored, none twice, none extra."""
    web = {"protocol": "dicomweb", "dicomweb_url": corpus_orthanc.dicomweb_url}
    pacs = web if method == "wado-rs" else {"retrieve": "c-get"}
    settings = pacs_settings(corpus_orthanc, max_associations=1, **pacs)  # C-GET: this process
    problems: dict[str, list[str]] = {}
    with Retriever(settings) as r:
        for n, (uid, held) in enumerate(by_study(corpus).items()):
            with pytest.raises(RetrievalPaused) as paused:
                r.retrieve(uid, tmp_path / str(n), len(held), stop=_nth_look(2))
            assert 0 < paused.value.files < len(held)
            got = r.retrieve(uid, tmp_path / str(n), len(held))
            assert got.files == len(held)
            diff = differences(got.folder, held)
            if diff:
                problems[held[0].modality] = diff
    assert problems == {}
