"""DICOMweb against real Orthanc with Debian's DICOMweb plugin: QIDO-RS answers as C-FIND's,
capped answers split by date the same way, WADO-RS studies byte-identical to what the PACS
was given, the counts checked, credentials from the environment only."""

from __future__ import annotations

import dataclasses
import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pydicom
import pytest

from connectors.config import settings_from_dict
from connectors.errors import ConfigError, PacsUnreachable, StudyFailed
from connectors.pacs.dicomweb import DicomwebClient, _parts, auth_from_env
from connectors.pacs.find import Window, find_patient, pacs_association
from connectors.pacs.retrieve import Retriever
from connectors.pacs.storage import file_name_for
from connectors.testbed.cohort import Cohort
from connectors.testbed.orthanc import free_port
from tests.support.pacs_fixtures import pacs_settings

pytestmark = pytest.mark.orthanc


def _web(orthanc: Any, **pacs: Any) -> Any:
    return pacs_settings(orthanc, protocol="dicomweb", dicomweb_url=orthanc.dicomweb_url, **pacs)


def _busiest(cohort: Cohort) -> str:
    """The MRN with the most studies on the PACS."""
    counts: dict[str, int] = {}
    for s in cohort.studies:
        counts[s.mrn] = counts.get(s.mrn, 0) + 1
    return max(counts, key=lambda m: counts[m])


def test_qido_answers_as_c_find_does_and_a_capped_answer_is_split(
    orthanc: Any, pacs_cohort: Cohort
) -> None:
    mrn = _busiest(pacs_cohort)
    window = Window(dt.date(1990, 1, 1), None)
    with pacs_association(pacs_settings(orthanc)) as assoc:
        dimse = find_patient(assoc, mrn, window)
    web = DicomwebClient(_web(orthanc).pacs)
    try:
        qido = find_patient(web, mrn, window)
        capped = DicomwebClient(_web(orthanc, find_result_cap=2).pacs)
        split = find_patient(capped, mrn, window, result_cap=2)
    finally:
        web.close()
    assert len(dimse.studies) > 2
    by_uid = {r["study_instance_uid"]: r for r in dimse.studies}
    assert sorted(by_uid) == sorted(r["study_instance_uid"] for r in qido.studies)
    keys = ("accession_number", "patient_id", "study_date", "study_description",
            "number_of_study_related_instances", "modalities_in_study", "patient_name")  # fmt: skip
    for row in qido.studies:
        want = by_uid[row["study_instance_uid"]]
        assert {k: row[k] for k in keys} == {k: want[k] for k in keys}
    assert qido.sub_queries == 1
    assert sorted(r["study_instance_uid"] for r in split.studies) == sorted(by_uid)
    assert split.sub_queries > 1  # split by date until every answer fitted under the cap


def test_wado_rs_retrieves_studies_byte_identical(
    orthanc: Any, pacs_files: list[Path], tmp_path: Path
) -> None:
    studies: dict[str, list[Path]] = {}
    for p in pacs_files:
        studies.setdefault(p.parent.name, []).append(p)
    uids = sorted(studies)[:3]
    settings = _web(orthanc, max_associations=2)
    with Retriever(settings) as r, ThreadPoolExecutor(2) as pool:
        got = list(pool.map(lambda u: r.retrieve(u, tmp_path / u, len(studies[u])), uids))
    for study in got:
        sources = studies[study.study_instance_uid]
        assert study.files == len(sources)
        for src in sources:
            uid = pydicom.dcmread(src, stop_before_pixels=True).SOPInstanceUID
            assert (study.folder / file_name_for(uid)).read_bytes() == src.read_bytes()
        assert (study.folder.stat().st_mode & 0o777) == 0o700

    with Retriever(settings) as r:
        with pytest.raises(StudyFailed) as short:
            r.retrieve(uids[0], tmp_path / "again", len(studies[uids[0]]) + 1)
        assert short.value.reason_category == "retrieve_incomplete"
        with pytest.raises(StudyFailed) as missing:
            r.retrieve("1.2.826.0.1.3680043.10.1234.999", tmp_path / "none", 1)
        assert missing.value.reason_category == "not_found_on_pacs"


def test_credentials_come_from_the_environment_and_a_refusal_is_unreachable(
    orthanc_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Orthanc with a user: wrong credentials are exit 3, the right ones work."""
    server = orthanc_factory(
        None,
        dicomweb=True,
        config={"AuthenticationEnabled": True, "RegisteredUsers": {"reader": "pw-123456"}},
    )
    pacs = _web(server).pacs
    monkeypatch.delenv("DICOMWEB_TOKEN", raising=False)
    monkeypatch.setenv("DICOMWEB_USER", "reader")
    monkeypatch.setenv("DICOMWEB_PASS", "wrong")
    with pytest.raises(PacsUnreachable, match="HTTP 401"):
        DicomwebClient(pacs).check()
    monkeypatch.setenv("DICOMWEB_PASS", "pw-123456")
    assert auth_from_env() == ("basic", ("reader", "pw-123456"))
    DicomwebClient(pacs).check()
    monkeypatch.setenv("DICOMWEB_TOKEN", "tok-abc")
    assert auth_from_env() == ("bearer", "tok-abc")
    dead = dataclasses.replace(pacs, dicomweb_url=f"http://127.0.0.1:{free_port()}/dicom-web")
    with pytest.raises(PacsUnreachable, match="cannot reach"):
        DicomwebClient(dead).check()


def test_config_and_multipart_edges() -> None:
    with pytest.raises(ConfigError, match=r"\[pacs\] protocol = 'http'"):
        settings_from_dict({"pacs": {"protocol": "http"}})
    with pytest.raises(ConfigError, match=r"\[pacs\] dicomweb_url must start with http"):
        settings_from_dict({"pacs": {"dicomweb_url": "pacs.example.org/dicom-web"}})
    with pytest.raises(ConfigError, match="credentials never go in the URL"):
        settings_from_dict({"pacs": {"dicomweb_url": "https://u:secret@pacs.example.org/dw"}})
    with pytest.raises(ConfigError, match="needs dicomweb_url"):
        DicomwebClient(settings_from_dict({"pacs": {"protocol": "dicomweb"}}).pacs)
    body = [b"one\r\n--XY", b"", b"three"]
    stream = (
        b"--XYZ\r\nContent-Type: application/dicom\r\n\r\n" + body[0] + b"\r\n--XYZ\r\n\r\n"
        + body[1] + b"\r\n--XYZ\r\nContent-Type: application/dicom\r\n\r\n" + body[2]
        + b"\r\n--XYZ--\r\n"
    )  # fmt: skip
    for n in (1, 3, 1000):
        chunks = [stream[i : i + n] for i in range(0, len(stream), n)]
        assert list(_parts(iter(chunks), b"XYZ")) == body
    with pytest.raises(OSError, match="ended before"):
        list(_parts(iter([stream[:-10]]), b"XYZ"))


def test_wado_rs_is_byte_preserving_across_transfer_syntaxes(
    orthanc_factory: Any, pacs_files: list[Path], tmp_path: Path
) -> None:
    """One study holding the same image in five transfer syntaxes (pydicom writes explicit,
    implicit and deflated; Orthanc compresses JPEG-LS lossless and JPEG lossless): every file
    arrives by WADO-RS exactly as the PACS was given it."""
    import json

    from pydicom.uid import (
        DeflatedExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        JPEGLosslessSV1,
        JPEGLSLossless,
        generate_uid,
    )

    server = orthanc_factory(None, dicomweb=True)
    study = generate_uid()
    src = pydicom.dcmread(next(p for p in pacs_files if "CT" in str(pydicom.dcmread(p).Modality)))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    written: list[Path] = []
    syntaxes = [src.file_meta.TransferSyntaxUID, ImplicitVRLittleEndian,
                DeflatedExplicitVRLittleEndian]  # fmt: skip
    for k, ts in enumerate(syntaxes):
        ds = src.copy()
        ds.StudyInstanceUID = study
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ts
        path = corpus / f"{k}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True, implicit_vr=ts.is_implicit_VR)
        written.append(path)
    server.upload(written[:1])
    (first,) = server.rest("GET", "/instances")
    for ts in (JPEGLSLossless, JPEGLosslessSV1):
        body = {"Transcode": ts, "Force": True, "Keep": ["StudyInstanceUID", "SeriesInstanceUID"],
                "Replace": {"SOPInstanceUID": generate_uid()}}  # fmt: skip
        path = corpus / f"{ts}.dcm"
        path.write_bytes(server.rest("POST", f"/instances/{first}/modify", json.dumps(body)))
        written.append(path)
    server.upload(written[1:])
    seen = {str(pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID)
            for p in written}  # fmt: skip
    assert len(seen) == 5
    with Retriever(_web(server, max_associations=1)) as r:
        got = r.retrieve(study, tmp_path / "got", len(written))
    assert got.files == len(written)
    for path in written:
        uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        assert (got.folder / file_name_for(uid)).read_bytes() == path.read_bytes(), path.name
