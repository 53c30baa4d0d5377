"""Throwaway scaffolding until the pacs test bed lands: start Orthanc, write CT studies."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Orthanc:
    def __init__(self, root: Path, nodelay: bool = True, modalities: dict | None = None) -> None:
        self.root = root
        self.dicom_port = free_port()
        self.http_port = free_port()
        root.mkdir(parents=True, exist_ok=True)
        cfg = {
            "Name": "bench",
            "StorageDirectory": str(root / "db"),
            "IndexDirectory": str(root / "db"),
            "DicomAet": "ORTHANC",
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomAlwaysAllowGet": True,
            "DicomAlwaysAllowMove": True,
            "DicomAlwaysAllowFind": True,
            "DicomModalities": modalities or {},
            "StorageCompression": False,
            "Plugins": [],
        }
        (root / "orthanc.json").write_text(json.dumps(cfg))
        env = dict(os.environ)
        if nodelay:
            env["TCP_NODELAY"] = "1"
        else:
            env.pop("TCP_NODELAY", None)
        self.proc = subprocess.Popen(
            ["/usr/sbin/Orthanc", str(root / "orthanc.json")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(root / "orthanc.log", "wb"),  # noqa: SIM115
        )
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/system", timeout=1)
                break
            except OSError:
                time.sleep(0.05)

    def upload(self, path: Path) -> None:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}/instances", data=path.read_bytes(), method="POST"
        )
        urllib.request.urlopen(req, timeout=60).read()  # noqa: S310 (loopback http)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def write_ct_study(folder: Path, n: int, size: int = 256, seed: int = 0) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    study = generate_uid()
    series = generate_uid()
    for i in range(n):
        ds = Dataset()
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.PatientID = f"P{seed:05d}"
        ds.PatientName = "Bench^Patient"
        ds.AccessionNumber = f"A{seed:07d}"
        ds.StudyDate = "20240101"
        ds.Modality = "CT"
        ds.InstanceNumber = i + 1
        ds.Rows = ds.Columns = size
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelData = rng.randbytes(size * size * 2)
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(folder / f"{i:05d}.dcm", enforce_file_format=True)
    return study
