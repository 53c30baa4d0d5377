"""XNAT fixtures (a pytest plugin registered by tests/conftest.py): the stand-in XNAT served
over a real socket on a free loopback port, and helpers to point Settings at it.

- ``standin_xnat``: a fresh stand-in (project ``HNC``) per test; ``XNAT_USER``/``XNAT_PASS`` set
  in the environment. Gives ``url``, ``user``, ``password``, ``project``, ``faults`` (switch
  faults on), ``store`` (what it holds) and ``server`` (``stop()``/``start()``).
- ``standin_xnat_factory(pacs=[...], projects=[...])``: more stand-ins, e.g. with a DQR PACS.
- ``xnat_settings(standin, base=None, **xnat)``: Settings whose ``[xnat]`` points at it.
- ``dicom_study(folder, n, ...)``: write a small synthetic study (pydicom) for upload tests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from connectors.config import Settings, XnatConfig
from connectors.testbed.xnat_standin import StandinXnat

USER = "svc_pacs2xnat"
PASSWORD = "synthetic-only-password"
PROJECT = "HNC"


@dataclass
class StandinHandle:
    server: StandinXnat
    user: str = USER
    password: str = PASSWORD
    project: str = PROJECT

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def faults(self) -> Any:
        return self.server.faults

    @property
    def store(self) -> Any:
        return self.server.store


def xnat_settings(standin: StandinHandle, base: Settings | None = None, **xnat: Any) -> Settings:
    fields: dict[str, Any] = {
        "url": standin.url,
        "project": standin.project,
        "timeout": 20.0,
        "dqr_poll_seconds": 0.1,
        "dqr_stall_timeout": 2.0,
    }
    fields.update(xnat)
    base = base or Settings()
    return dataclasses.replace(base, xnat=XnatConfig(**fields))


@pytest.fixture
def standin_xnat_factory(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., StandinHandle]]:
    monkeypatch.setenv("XNAT_USER", USER)
    monkeypatch.setenv("XNAT_PASS", PASSWORD)
    started: list[StandinXnat] = []

    def start(
        pacs: list[dict[str, Any]] | None = None,
        projects: tuple[str, ...] = (PROJECT,),
        **options: Any,  # StandinXnat's: version="1.8.5", archive_seconds_per_file=...
    ) -> StandinHandle:
        server = StandinXnat(users={USER: PASSWORD}, projects=projects, pacs=pacs, **options)
        server.start()
        started.append(server)
        return StandinHandle(server)

    yield start
    for server in started:
        server.close()


@pytest.fixture
def standin_xnat(standin_xnat_factory: Callable[..., StandinHandle]) -> StandinHandle:
    return standin_xnat_factory()


def dicom_study(
    folder: Path,
    n: int,
    *,
    study_uid: str | None = None,
    series: int = 1,
    accession: str = "ACC0001",
    patient_id: str = "MRN0001",
    modality: str = "CT",
    side: int = 64,
) -> tuple[str, list[Path]]:
    """Write ``n`` CT instances (``side`` x ``side`` pixels, small by default) of one study over
    ``series`` series; (Study UID, files)."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uids = [generate_uid() for _ in range(series)]
    files = []
    for i in range(n):
        sop = generate_uid()
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uids[i % series]
        ds.SeriesNumber = i % series + 1
        ds.InstanceNumber = i + 1
        ds.Modality = modality
        ds.PatientName = "SYNTHETIC^PATIENT"
        ds.PatientID = patient_id
        ds.AccessionNumber = accession
        ds.StudyDate = "20210304"
        ds.StudyTime = "101500"
        ds.SeriesDescription = f"series {i % series + 1}"
        ds.PixelData = bytes(side * side * 2)
        ds.Rows = ds.Columns = side
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.SamplesPerPixel = 1
        ds.PixelRepresentation = 0
        ds.PhotometricInterpretation = "MONOCHROME2"
        path = folder / f"{sop}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        files.append(path)
    return study_uid, files
