"""Bit for bit through the whole loader: the corpus (every SOP class family and transfer
syntax) in a real Orthanc, ``load`` in direct mode over C-GET and C-MOVE with both back ends
and over WADO-RS (Orthanc's DICOMweb plugin), into the stand-in XNAT. What reached the import
service is read instance by instance: same SOP Instance UID, transfer syntax and pixel data
bytes as the PACS holds; none missing, none extra.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import pytest

from connectors.load.runner import run_load
from connectors.testbed.corpus import CorpusInstance
from connectors.warehouse.runs import RunContext
from connectors.warehouse.store import Warehouse
from tests.support.corpus_fixtures import CORPUS_MOVE_AET
from tests.support.load_helpers import MANIFEST_DDL, attempts, load_settings_for
from tests.support.xnat_fixtures import StandinHandle


def write_corpus_manifest(settings: Any, corpus: list[CorpusInstance]) -> int:
    """One ``ingest_manifest`` row per corpus study (the mart's columns)."""
    studies: dict[str, list[CorpusInstance]] = {}
    for i in corpus:
        studies.setdefault(i.study_instance_uid, []).append(i)
    rows = []
    for n, (uid, held) in enumerate(sorted(studies.items())):
        ds = pydicom.dcmread(held[0].path, stop_before_pixels=True)
        rows.append((ds.AccessionNumber, ds.PatientID, "2026-03-01", ds.StudyDescription, uid,
                     f"999000000{n}", f"999000000{n}", ds.AccessionNumber, ds.PatientID,
                     "", len(held), "load", None))  # fmt: skip
    with Warehouse(settings.warehouse_path).connect() as con:
        con.execute(MANIFEST_DDL)
        con.executemany(f"insert into main.ingest_manifest values ({', '.join('?' * 13)})", rows)
    return len(rows)


@pytest.mark.slow
@pytest.mark.orthanc
@pytest.mark.parametrize(
    ("method", "backend", "associations"),
    [
        ("c-get", "pynetdicom", 2),
        ("c-move", "pynetdicom", 1),
        ("c-move", "dcmtk", 1),
        ("wado-rs", "pynetdicom", 2),
    ],
)
def test_what_reaches_xnat_is_what_the_pacs_holds(
    method: str,
    backend: str,
    associations: int,
    corpus: list[CorpusInstance],
    corpus_orthanc: Any,
    corpus_move_port: int,
    standin_xnat: StandinHandle,
    tmp_path: Path,
) -> None:
    standin_xnat.store.uploads = []
    pacs = {"retrieve": method, "retrieve_backend": backend, "max_associations": associations,
            "move_destination": CORPUS_MOVE_AET, "receive_port": corpus_move_port}  # fmt: skip
    if method == "wado-rs":
        pacs = {**pacs, "retrieve": "c-get", "protocol": "dicomweb",
                "dicomweb_url": corpus_orthanc.dicomweb_url}  # fmt: skip
    settings = load_settings_for(tmp_path, corpus_orthanc, standin_xnat, pacs)
    n = write_corpus_manifest(settings, corpus)
    rc = RunContext(settings=settings, command="load", arguments=[])
    summary = run_load(rc, "direct", build_manifest=False)
    assert (summary["loaded"], summary["failed"]) == (n, 0)
    received = [pydicom.dcmread(BytesIO(b)) for b in standin_xnat.store.uploads]
    got = {str(ds.SOPInstanceUID): ds for ds in received}
    assert len(got) == len(received)  # none twice
    assert sorted(got) == sorted(i.sop_instance_uid for i in corpus)  # none missing or extra
    for held in corpus:
        ds, src = got[held.sop_instance_uid], pydicom.dcmread(held.path)
        assert str(ds.file_meta.TransferSyntaxUID) == held.transfer_syntax_uid, held
        assert ds.get("PixelData") == src.get("PixelData"), held
        assert ds.SOPClassUID == held.sop_class_uid
    assert all(a["instances_lossy_converted"] in (None, 0) for a in attempts(settings))
