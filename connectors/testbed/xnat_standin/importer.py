"""The import service's DICOM-zip handler: read a zip of DICOM into sessions and scans.

Streaming: the request body is spooled to a temporary file (a few MB in memory, the rest on
disk), opened with ``zipfile`` and each entry's header read with pydicom ``stop_before_pixels``.
Files are grouped into one session per Study Instance UID and one scan per Series Instance UID.
"""

from __future__ import annotations

import contextlib
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import pydicom
from pydicom.errors import InvalidDicomError

from connectors.testbed.xnat_standin.store import Scan, Session

SPOOL_BYTES = 8 << 20
CHUNK = 1 << 20


class ImportRejected(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Instance:
    study_uid: str
    series_uid: str
    sop_uid: str
    modality: str
    series_number: str
    series_description: str
    study_date: str
    study_time: str
    accession: str
    patient_name: str
    patient_id: str
    size: int

    @classmethod
    def from_dataset(cls, ds: Any, size: int) -> Instance:
        """From a DICOM header (raises AttributeError when a UID is missing)."""

        def text(keyword: str) -> str:
            return str(ds.get(keyword, "") or "")

        return cls(
            study_uid=str(ds.StudyInstanceUID),
            series_uid=str(ds.SeriesInstanceUID),
            sop_uid=str(ds.SOPInstanceUID),
            modality=text("Modality"),
            series_number=text("SeriesNumber"),
            series_description=text("SeriesDescription"),
            study_date=text("StudyDate"),
            study_time=text("StudyTime"),
            accession=text("AccessionNumber"),
            patient_name=text("PatientName"),
            patient_id=text("PatientID"),
            size=size,
        )


def read_body(environ: dict, out: IO[bytes]) -> int:
    """Copy the WSGI request body to ``out``, decoding chunked transfer encoding by hand
    (wsgiref passes the raw socket stream through). Returns the byte count."""
    stream = environ["wsgi.input"]
    total = 0
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        while True:
            line = stream.readline(65537)
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while stream.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return total
            left = size
            while left:
                block = stream.read(min(left, CHUNK))
                if not block:
                    raise ImportRejected(400, "truncated chunked body")
                out.write(block)
                left -= len(block)
                total += len(block)
            stream.readline(3)
    length = int(environ.get("CONTENT_LENGTH") or 0)
    while length > 0:
        block = stream.read(min(length, CHUNK))
        if not block:
            break
        out.write(block)
        length -= len(block)
        total += len(block)
    return total


class _Null:
    def write(self, block: bytes) -> int:
        return len(block)


def drain(environ: dict) -> None:
    """Read and drop a request body we answer without using, so the client is not cut off
    mid-upload (it then reads our answer instead of a broken pipe)."""
    if environ.get("REQUEST_METHOD", "GET").upper() in ("POST", "PUT"):
        with contextlib.suppress(OSError, ValueError, ImportRejected):
            read_body(environ, _Null())  # type: ignore[arg-type]


def spool_body(environ: dict) -> tuple[IO[bytes], int]:
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - caller closes
    n = read_body(environ, spool)
    spool.seek(0)
    return spool, n


def iter_instances(archive: IO[bytes]) -> Iterator[Instance]:
    """Every DICOM file in the zip (headers only). Not a zip → 400; unreadable entry → 400."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise ImportRejected(400, "Unsupported format: the body is not a zip archive") from None
    with zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            with zf.open(info) as fp:
                try:
                    ds = pydicom.dcmread(fp, stop_before_pixels=True)
                    instance = Instance.from_dataset(ds, info.file_size)
                except (InvalidDicomError, AttributeError, EOFError, ValueError):
                    raise ImportRejected(
                        400, f"unable to read DICOM object {info.filename}"
                    ) from None
                yield instance


def build_sessions(
    instances: Iterator[Instance], project: str, session_label: str | None, drop: int = 0
) -> tuple[list[tuple[Session, str]], int]:
    """Group instances into (session, subject label) by Study Instance UID; ``drop`` files are
    lost on purpose (the fault "archived with fewer files than sent"). Returns sessions, files."""
    by_study: dict[str, tuple[Session, str]] = {}
    n = 0
    for inst in instances:
        n += 1
        if drop and n <= drop:
            continue
        entry = by_study.get(inst.study_uid)
        if entry is None:
            label = session_label or inst.patient_id or inst.accession or "dicom_upload"
            date = inst.study_date
            iso = f"{date[:4]}-{date[4:6]}-{date[6:8]}" if len(date) == 8 else ""
            sess = Session(
                id="",
                project=project,
                subject_id="",
                label=label,
                uid=inst.study_uid,
                modality=inst.modality,
                date=iso,
                time=inst.study_time[:6],
                accession=inst.accession,
            )
            entry = (sess, inst.patient_name.replace("^", "_") or "unknown")
            by_study[inst.study_uid] = entry
        sess = entry[0]
        scan = sess.scans.get(inst.series_uid)
        if scan is None:
            scan_id = inst.series_number or str(len(sess.scans) + 1)
            if any(s.id == scan_id for s in sess.scans.values()):
                scan_id = f"{scan_id}-{len(sess.scans) + 1}"
            scan = Scan(scan_id, inst.series_uid, inst.modality, inst.series_description)
            sess.scans[inst.series_uid] = scan
        scan.files[inst.sop_uid] = inst.size
    return list(by_study.values()), n
