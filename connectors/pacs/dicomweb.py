"""DICOMweb, the third way in (``[pacs] protocol = "dicomweb"``): QIDO-RS for the study query,
WADO-RS for retrieval, on ``dicomweb_url`` (e.g. ``https://pacs.example.org/dicom-web``).

Credentials come from the environment only: ``DICOMWEB_TOKEN`` (bearer), else
``DICOMWEB_USER`` + ``DICOMWEB_PASS`` (basic), else none.

- ``DicomwebClient.find(mrn, window, study_time)``: one QIDO-RS study query, paged with
  ``limit``/``offset``; answers as ``raw.pacs_studies`` rows (``find.answer_row``) and a
  "final status" as C-FIND would give it, so ``find.find_patient`` splits a capped answer by
  date exactly as for C-FIND: CANCEL when the server says it truncated (``Warning: 299``), when
  it ignores ``offset`` (a page repeats), or at ``find_result_cap``.
- ``DicomwebClient.retrieve(uid, sink)``: WADO-RS ``GET /studies/{uid}`` with
  ``Accept: multipart/related; type="application/dicom"; transfer-syntax=*`` (the stored
  transfer syntax, byte for byte), the response streamed and each part written as it completes
  (``StudySink``: one instance in memory at a time), named by its SOP Instance UID; with
  ``stop`` (a PACS window ends, ``windows.py``) it ends after the instance in flight.
- ``DicomwebClient.instances(uid)``: the study's (series, instance) UIDs, so a paused study
  is continued with only what is missing (``retrieve/wado.py``).

HTTP 401/403 and no connection are ``PacsUnreachable`` (exit 3); 429 and 5xx a transient
``QueryFailed`` / ``StudyFailed("retrieve_failed")``; 404 on a study is ``not_found_on_pacs``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from io import BytesIO
from typing import Any

import requests
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from connectors.config import PacsConfig
from connectors.errors import ConfigError, PacsUnreachable, QueryFailed, StudyFailed
from connectors.pacs.storage import StudySink

logger = logging.getLogger(__name__)

PAGE = 500  # QIDO-RS results asked per request
CANCEL, SUCCESS = 0xFE00, 0x0000
ACCEPT_DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'
CHUNK = 1 << 20
SOP_UID = Tag(0x0008, 0x0018)
MEDIA_SOP_UID = Tag(0x0002, 0x0003)
#: QIDO-RS return keys (the C-FIND's ``RETURN_KEYS``), by keyword.
INCLUDE = [
    "AccessionNumber", "PatientID", "StudyDate", "StudyTime", "StudyDescription",
    "StudyInstanceUID", "ModalitiesInStudy", "NumberOfStudyRelatedInstances", "PatientName",
    "PatientBirthDate", "SpecificCharacterSet",
]  # fmt: skip


def auth_from_env() -> tuple[str, Any]:
    """("bearer"|"basic"|"none", what requests needs); secrets never leave the environment."""
    token = os.environ.get("DICOMWEB_TOKEN", "").strip()
    if token:
        return "bearer", token
    user, password = os.environ.get("DICOMWEB_USER", ""), os.environ.get("DICOMWEB_PASS", "")
    if user:
        return "basic", (user, password)
    return "none", None


class DicomwebClient:
    """One HTTP session with the DICOMweb server (thread-safe enough for one thread each)."""

    def __init__(self, pacs: PacsConfig) -> None:
        if not pacs.dicomweb_url:
            raise ConfigError("[pacs] protocol = 'dicomweb' needs dicomweb_url")
        self.pacs = pacs
        self.base = pacs.dicomweb_url.rstrip("/")
        self.session = requests.Session()
        kind, secret = auth_from_env()
        if kind == "bearer":
            self.session.headers["Authorization"] = f"Bearer {secret}"
        elif kind == "basic":
            self.session.auth = secret
        self.auth_kind = kind

    def close(self) -> None:
        self.session.close()

    def describe(self) -> str:
        return f"DICOMweb server {self.base} ({self.auth_kind} authentication)"

    def _get(self, path: str, *, stream: bool = False, **kw: Any) -> requests.Response:
        timeout = (self.pacs.acse_timeout, self.pacs.network_timeout)
        try:
            resp = self.session.get(self.base + path, timeout=timeout, stream=stream, **kw)
        except requests.ConnectionError as e:
            raise PacsUnreachable(f"cannot reach {self.describe()}: {type(e).__name__}") from None
        except requests.Timeout:
            if stream:  # a retrieval: the study failed, the run goes on
                raise StudyFailed("timeout", f"{self.describe()}: no answer in time") from None
            raise QueryFailed(f"{self.describe()}: no answer in time", transient=True) from None
        if resp.status_code in (401, 403):
            resp.close()
            raise PacsUnreachable(
                f"{self.describe()} refused us (HTTP {resp.status_code}): check "
                "DICOMWEB_USER/DICOMWEB_PASS or DICOMWEB_TOKEN"
            )
        return resp

    # -- QIDO-RS ---------------------------------------------------------------------------

    def check(self) -> None:
        """One tiny QIDO-RS query: the server answers and lets us in (doctor, fail fast)."""
        resp = self._get("/studies", params={"limit": "1"})
        if resp.status_code not in (200, 204):
            raise PacsUnreachable(f"{self.describe()}: QIDO-RS answered HTTP {resp.status_code}")

    def find(self, mrn: str, date_range: str, study_time: str) -> tuple[list[Dataset], int]:
        """Every study of ``mrn`` in a StudyDate (and StudyTime) range: (answers, the final
        status C-FIND would have given: CANCEL when capped)."""
        params: dict[str, str | list[str]] = {"PatientID": mrn, "includefield": INCLUDE}
        if date_range:
            params["StudyDate"] = date_range
        if study_time:
            params["StudyTime"] = study_time
        rows: dict[str, Dataset] = {}
        cap = self.pacs.find_result_cap
        for page, resp in self._pages("/studies", params, _query_failed(self.describe())):
            before = len(rows)
            for ds in page:
                rows.setdefault(str(ds.get("StudyInstanceUID") or ""), ds)
            truncated = "299" in resp.headers.get("Warning", "")
            repeated = page and len(rows) == before  # the server ignored offset
            if truncated or repeated or (cap and len(rows) >= cap):
                return list(rows.values()), CANCEL
            if len(page) < PAGE:
                break
        return list(rows.values()), SUCCESS

    def _pages(
        self,
        path: str,
        params: dict[str, Any],
        failed: Callable[[str, int | None], Exception],
        empty: tuple[int, ...] = (204,),
    ) -> Iterator[tuple[list[Dataset], requests.Response]]:
        """A QIDO-RS listing ``PAGE`` results at a time (``limit``/``offset``), each page
        decoded with its response; it ends at an ``empty`` status (no content). Another status
        than 200, or an answer that is not DICOM JSON, raises ``failed(message, HTTP status)``.
        The caller stops reading at the last page."""
        offset = 0
        while True:
            resp = self._get(path, params={**params, "limit": str(PAGE), "offset": str(offset)})
            if resp.status_code in empty:
                return
            if resp.status_code != 200:
                raise failed(f"QIDO-RS answered HTTP {resp.status_code}", resp.status_code)
            try:
                page = [Dataset.from_json(obj) for obj in resp.json()]
            except (ValueError, TypeError, KeyError) as e:
                raise failed(f"QIDO-RS answer not DICOM JSON: {e}", None) from None
            yield page, resp
            offset += len(page)

    # -- WADO-RS ---------------------------------------------------------------------------

    def retrieve(
        self, uid: str, sink: StudySink, stop: Callable[[], bool] | None = None, path: str = ""
    ) -> bool:
        """The whole study (or ``path`` below it: ``/series/{s}``, ``/series/{s}/instances/{i}``)
        into ``sink``, streamed part by part, as the server stores it. ``stop`` is asked after
        each instance written: when it says so the transfer ends there (the instance in flight
        is finished, the rest is not read) and False is returned; True when all arrived."""
        resp = self._get(f"/studies/{uid}{path}", stream=True, headers={"Accept": ACCEPT_DICOM})
        with resp:
            if resp.status_code in (204, 404):
                raise StudyFailed("not_found_on_pacs", f"study {uid} is not on the PACS (WADO-RS)")
            if resp.status_code != 200:
                raise StudyFailed(
                    "retrieve_failed", f"study {uid}: WADO-RS answered HTTP {resp.status_code}"
                )
            boundary = _boundary(resp.headers.get("Content-Type", ""))
            try:
                for part in _parts(resp.iter_content(CHUNK), boundary):
                    sink.write(_sop_uid(part), part)
                    if stop is not None and stop():
                        return False
            except (requests.RequestException, OSError) as e:
                raise StudyFailed(
                    "retrieve_failed", f"study {uid}: the WADO-RS transfer broke off ({e})"
                ) from None
        return True

    def instances(self, uid: str) -> list[tuple[str, str]]:
        """(Series Instance UID, SOP Instance UID) of every instance of the study (QIDO-RS at
        instance level, paged): what a paused retrieval still needs is told from this."""
        out: list[tuple[str, str]] = []
        seen: set[str] = set()
        params = {"includefield": ["SeriesInstanceUID", "SOPInstanceUID"]}
        failed = _retrieve_failed(uid)
        for page, _resp in self._pages(f"/studies/{uid}/instances", params, failed, (204, 404)):
            before = len(out)
            for ds in page:
                sop = str(ds.get("SOPInstanceUID") or "")
                if sop and sop not in seen:
                    seen.add(sop)
                    out.append((str(ds.get("SeriesInstanceUID") or ""), sop))
            if len(page) < PAGE or len(out) == before:  # the last page, or offset ignored
                break
        return out


def _query_failed(server: str) -> Callable[[str, int | None], Exception]:
    """A QIDO-RS study query's failure: 429 and 5xx transient (asked again), the rest not."""

    def failed(message: str, status: int | None) -> Exception:
        if status is None:
            return QueryFailed(f"{server}: {message}")
        transient = status == 429 or status >= 500
        return QueryFailed(
            f"{server}: {message}", status_code=f"HTTP {status}", transient=transient
        )

    return failed


def _retrieve_failed(uid: str) -> Callable[[str, int | None], Exception]:
    """A paused study's instance listing that failed: a transient ``retrieve_failed``."""
    return lambda message, _status: StudyFailed("retrieve_failed", f"study {uid}: {message}")


def _boundary(content_type: str) -> bytes:
    for piece in content_type.split(";"):
        key, _, value = piece.strip().partition("=")
        if key.lower() == "boundary":
            return value.strip().strip('"').encode("ascii")
    raise StudyFailed("retrieve_failed", f"WADO-RS answer is not multipart ({content_type!r})")


def _parts(chunks: Iterator[bytes], boundary: bytes) -> Iterator[bytes]:
    """The bodies of a multipart/related stream, each as soon as its closing delimiter has
    arrived (one part in memory at a time); ``OSError`` if the stream stops before the end."""
    delim = b"\r\n--" + boundary
    buf = bytearray(b"\r\n")  # so the first delimiter looks like every other one
    in_part, scanned = False, 0
    for chunk in chunks:
        buf += chunk
        while True:
            if not in_part:
                at = buf.find(delim)
                if at < 0:
                    del buf[: max(0, len(buf) - len(delim))]  # preamble
                    break
                rest = buf[at + len(delim) :]
                if rest.startswith(b"--"):
                    return
                eol = rest.find(b"\r\n")
                if eol < 0:
                    del buf[:at]
                    break
                buf = rest[eol + 2 :]  # the part's header lines, an empty line, the body
                in_part, scanned = True, 0
            at = buf.find(delim, scanned)
            if at < 0:
                scanned = max(0, len(buf) - len(delim))
                break
            if buf.startswith(b"\r\n"):  # no headers
                yield bytes(buf[2:at])
            else:
                end = buf.find(b"\r\n\r\n", 0, at)
                yield bytes(buf[end + 4 : at]) if end >= 0 else b""
            del buf[:at]
            in_part = False
    raise OSError("the multipart answer ended before its closing delimiter")


def _sop_uid(data: bytes) -> str:
    try:
        ds = dcmread(BytesIO(data), stop_before_pixels=True, specific_tags=[SOP_UID])
        return str(ds.get("SOPInstanceUID") or ds.file_meta.get("MediaStorageSOPInstanceUID"))
    except Exception:  # a part we cannot read still lands on disk, under a hashed name
        return ""
