"""The embedded demo PACS: an in-process pynetdicom Query/Retrieve SCP serving DICOM files.

Used by ``pacs2xnat demo`` when Orthanc is not installed, and by tests that need a PACS whose
behaviour they control: C-ECHO; study-level C-FIND in the Study Root and Patient Root models
(single values, ``*``/``?`` wildcards, date/time ranges, UID lists); C-GET and C-MOVE at study,
series or image level (C-MOVE to known destinations ``{AE title: (host, port)}``); TCP_NODELAY
on every socket. Knobs for the real world: ``latency`` (seconds before each C-FIND answer),
``result_cap`` with ``cap_status`` (``"cancel"``: end with 0xFE00 after exactly the cap, as
Orthanc does; ``"success"``: end with Success, as many hospital PACS do), ``find_status`` (answer
every C-FIND with this failure status), ``abort_after`` (abort a C-GET/C-MOVE after k instances),
``abort_finds`` (abort the association on the first k C-FIND requests), ``reported_syntax``
(answer image-level C-FIND with the stored transfer syntax: ``pacs_matching.py``).
Every request is recorded in ``requests`` (service, calling AE title, identifier as a dict) so
tests can assert on what the PACS *received*.

    with DemoPacs(folder, aet="DEMOPACS") as pacs:
        print(pacs.host, pacs.port, pacs.aet)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.presentation import AllStoragePresentationContexts, build_context
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from connectors.pacs.net import NODELAY_HANDLERS
from connectors.testbed.orthanc import free_port
from connectors.testbed.pacs_matching import image_answers, match_value

logger = logging.getLogger(__name__)

#: Study-level attributes the index keeps (keyword -> taken from the instance, or computed).
STUDY_KEYS = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyDescription",
    "StudyID",
    "ReferringPhysicianName",
)
CANCEL = 0xFE00
SUCCESS = 0x0000


@dataclass
class Instance:
    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str = ""


@dataclass
class StudyRecord:
    """One study as the SCP's index knows it."""

    attrs: dict[str, str]
    charset: str
    instances: list[Instance] = field(default_factory=list)
    modalities: set[str] = field(default_factory=set)
    declared_instances: int | None = None  # for file-less studies (C-FIND only)

    def value(self, keyword: str) -> str:
        if keyword == "ModalitiesInStudy":
            return "\\".join(sorted(self.modalities))
        if keyword == "NumberOfStudyRelatedInstances":
            if self.declared_instances is not None:
                return str(self.declared_instances)
            return str(len(self.instances))
        if keyword == "NumberOfStudyRelatedSeries":
            return str(len({i.series_instance_uid for i in self.instances}))
        return self.attrs.get(keyword, "")


class DemoPacs:
    """An in-process Query/Retrieve SCP on a free loopback port (a context manager)."""

    def __init__(
        self,
        folder: Path | None = None,
        *,
        aet: str = "DEMOPACS",
        host: str = "127.0.0.1",
        port: int = 0,
        destinations: Mapping[str, tuple[str, int]] | None = None,
        latency: float = 0.0,
        result_cap: int = 0,
        cap_status: str = "cancel",
        find_status: int | None = None,
        require_called_aet: bool = True,
        abort_after: int | None = None,
        abort_finds: int = 0,
        tcp_nodelay: bool = True,
        reported_syntax: Mapping[str, str] | None = None,
    ) -> None:
        self.aet = aet
        self.host = host
        self.port = port
        self.destinations = dict(destinations or {})
        self.latency = latency
        self.result_cap = result_cap
        self.cap_status = cap_status
        self.find_status = find_status
        self.require_called_aet = require_called_aet
        self.abort_after = abort_after
        self.abort_finds = abort_finds
        self.tcp_nodelay = tcp_nodelay
        self.reported_syntax = None if reported_syntax is None else dict(reported_syntax)
        self.studies: dict[str, StudyRecord] = {}
        self._by_patient: dict[str, list[StudyRecord]] = {}
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server: Any = None
        self._ae: AE | None = None
        if folder is not None:
            self.add_files(sorted(Path(folder).rglob("*.dcm")))

    # ------------------------------------------------------------------ index

    def add_files(self, paths: Iterable[Path]) -> int:
        """Index DICOM files (headers only); returns how many were added."""
        n = 0
        for path in paths:
            try:
                ds = dcmread(path, stop_before_pixels=True)
            except (InvalidDicomError, OSError) as e:
                logger.warning("demo PACS skips %s: %s", path, e)
                continue
            uid = str(ds.StudyInstanceUID)
            with self._lock:
                rec = self.studies.get(uid)
                if rec is None:
                    attrs = {k: str(ds.get(k, "") or "") for k in STUDY_KEYS}
                    charset = ds.get("SpecificCharacterSet", "") or ""
                    if not isinstance(charset, str):
                        charset = "\\".join(charset)
                    rec = self.studies[uid] = StudyRecord(attrs, charset)
                    self._by_patient.setdefault(attrs["PatientID"], []).append(rec)
                rec.instances.append(
                    Instance(
                        Path(path),
                        str(ds.SOPClassUID),
                        str(ds.SOPInstanceUID),
                        str(ds.SeriesInstanceUID),
                        str(ds.file_meta.get("TransferSyntaxUID", "")),
                    )
                )
                if ds.get("Modality"):
                    rec.modalities.add(str(ds.Modality))
            n += 1
        return n

    def add_study(
        self, attrs: Mapping[str, str], modalities: Iterable[str], n_instances: int, charset: str
    ) -> None:
        """Index a study that has no files (answers C-FIND only): for large query benchmarks."""
        rec = StudyRecord(
            {k: str(attrs.get(k, "")) for k in STUDY_KEYS},
            charset,
            modalities=set(modalities),
            declared_instances=n_instances,
        )
        with self._lock:
            self.studies[rec.attrs["StudyInstanceUID"]] = rec
            self._by_patient.setdefault(rec.attrs["PatientID"], []).append(rec)

    def matches(self, query: Dataset) -> list[StudyRecord]:
        """The studies matching a study-level identifier (universal match for empty keys)."""
        conditions: list[tuple[str, str, str]] = []
        for elem in query:
            kw = elem.keyword
            if kw in {"QueryRetrieveLevel", "SpecificCharacterSet", "RetrieveAETitle"} or not kw:
                continue
            value = elem.value
            if value is None or value == "":
                continue
            text = "\\".join(str(v) for v in value) if elem.VM > 1 else str(value)
            if text:
                conditions.append((kw, text, elem.VR))
        pid = str(query.get("PatientID", "") or "")
        with self._lock:
            if pid and not any(c in pid for c in "*?\\"):
                studies = list(self._by_patient.get(pid, ()))  # exact Patient ID: indexed
            else:
                studies = list(self.studies.values())
        out = []
        for rec in studies:
            ok = True
            for kw, text, vr in conditions:
                if kw == "ModalitiesInStudy":
                    ok = bool(set(text.split("\\")) & rec.modalities)
                elif kw in {"SeriesInstanceUID", "SOPInstanceUID"}:
                    ok = True  # narrowed per instance by the retrieve handlers
                else:
                    ok = match_value(text, rec.value(kw), vr)
                if not ok:
                    break
            if ok:
                out.append(rec)
        return sorted(out, key=lambda r: (r.attrs["StudyDate"], r.attrs["StudyInstanceUID"]))

    # ------------------------------------------------------------------ handlers

    def _record(self, service: str, event: evt.Event) -> Dataset:
        ds = event.identifier
        entry = {
            "service": service,
            "calling_aet": str(event.assoc.requestor.ae_title).strip(),
            "called_aet": str(event.assoc.acceptor.ae_title).strip(),
            "identifier": {e.keyword: str(e.value) for e in ds if e.keyword},
            "at": time.monotonic(),
        }
        if service == "C-MOVE":
            entry["move_destination"] = str(event.move_destination).strip()
        with self._lock:
            self.requests.append(entry)
        return ds

    def _handle_echo(self, event: evt.Event) -> int:
        with self._lock:
            self.requests.append({"service": "C-ECHO", "at": time.monotonic()})
        return SUCCESS

    def _handle_find(self, event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        query = self._record("C-FIND", event)
        with self._lock:
            abort, self.abort_finds = self.abort_finds > 0, max(0, self.abort_finds - 1)
        if abort:  # a lost association: the requestor must reopen one and ask again
            event.assoc.abort()
            return
        if self.latency:
            time.sleep(self.latency)
        if self.find_status is not None:
            yield self.find_status, None
            return
        level = str(query.get("QueryRetrieveLevel", "")).upper()
        if level == "IMAGE" and self.reported_syntax is not None:  # see pacs_matching.py
            study = str(query.get("StudyInstanceUID", ""))
            yield from image_answers(self._instances(query), study, self.reported_syntax)
            return
        if level != "STUDY":
            yield 0xC000, None  # this demo PACS answers study-level queries only
            return
        found = self.matches(query)
        for n, rec in enumerate(found):
            if event.is_cancelled:
                yield CANCEL, None
                return
            if self.result_cap and n >= self.result_cap:
                if self.cap_status == "cancel":
                    yield CANCEL, None
                return  # "success": end quietly after exactly the cap
            yield 0xFF00, self._answer(query, rec)

    def _answer(self, query: Dataset, rec: StudyRecord) -> Dataset:
        ds = Dataset()
        if rec.charset:
            ds.SpecificCharacterSet = rec.charset.split("\\")
        ds.QueryRetrieveLevel = "STUDY"
        ds.RetrieveAETitle = self.aet
        for elem in query:
            kw = elem.keyword
            if not kw or kw in {"QueryRetrieveLevel", "SpecificCharacterSet", "RetrieveAETitle"}:
                continue
            value = rec.value(kw)
            setattr(ds, kw, value.split("\\") if "\\" in value else value)
        return ds

    def _instances(self, query: Dataset) -> list[Instance]:
        series = set(str(query.get("SeriesInstanceUID", "") or "").split("\\")) - {""}
        sops = set(str(query.get("SOPInstanceUID", "") or "").split("\\")) - {""}
        out = []
        for rec in self.matches(query):
            for inst in rec.instances:
                if series and inst.series_instance_uid not in series:
                    continue
                if sops and inst.sop_instance_uid not in sops:
                    continue
                out.append(inst)
        return out

    def _send(self, event: evt.Event, instances: list[Instance]) -> Iterator[Any]:
        for k, inst in enumerate(instances):
            if event.is_cancelled:
                yield CANCEL, None
                return
            if self.abort_after is not None and k >= self.abort_after:
                event.assoc.abort()
                return
            yield 0xFF00, dcmread(inst.path)

    def _handle_get(self, event: evt.Event) -> Iterator[Any]:
        query = self._record("C-GET", event)
        instances = self._instances(query)
        yield len(instances)
        yield from self._send(event, instances)

    def _handle_move(self, event: evt.Event) -> Iterator[Any]:
        query = self._record("C-MOVE", event)
        dest = self.destinations.get(str(event.move_destination).strip())
        if dest is None:
            yield None, None  # unknown destination: pynetdicom answers 0xA801
            return
        instances = self._instances(query)
        classes = sorted({i.sop_class_uid for i in instances})
        kwargs = {
            "contexts": [build_context(c, ALL_TRANSFER_SYNTAXES[:3]) for c in classes],
            "evt_handlers": list(NODELAY_HANDLERS) if self.tcp_nodelay else [],
        }
        yield dest[0], dest[1], kwargs
        yield len(instances)
        yield from self._send(event, instances)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> DemoPacs:
        ae = AE(ae_title=self.aet)
        ae.require_called_aet = self.require_called_aet
        ae.acse_timeout = 30
        ae.dimse_timeout = 60
        ae.network_timeout = 60
        ae.maximum_associations = 16
        ae.add_supported_context(Verification)
        for sop in (
            StudyRootQueryRetrieveInformationModelFind,
            PatientRootQueryRetrieveInformationModelFind,
            StudyRootQueryRetrieveInformationModelGet,
            PatientRootQueryRetrieveInformationModelGet,
            StudyRootQueryRetrieveInformationModelMove,
            PatientRootQueryRetrieveInformationModelMove,
        ):
            ae.add_supported_context(sop, ALL_TRANSFER_SYNTAXES)
        for cx in AllStoragePresentationContexts:  # C-GET: we store on the requestor's assoc
            ae.add_supported_context(
                str(cx.abstract_syntax), ALL_TRANSFER_SYNTAXES, scp_role=True, scu_role=False
            )
        handlers: list[Any] = [
            (evt.EVT_C_ECHO, self._handle_echo),
            (evt.EVT_C_FIND, self._handle_find),
            (evt.EVT_C_GET, self._handle_get),
            (evt.EVT_C_MOVE, self._handle_move),
        ]
        if self.tcp_nodelay:
            handlers += NODELAY_HANDLERS
        for attempt in range(3):
            port = self.port or free_port(self.host)
            try:
                self._server = ae.start_server(
                    (self.host, port), block=False, evt_handlers=handlers
                )
            except OSError:
                if self.port or attempt == 2:
                    raise
                continue
            self.port = port
            break
        self._ae = ae
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._ae is not None:
            self._ae.shutdown()
            self._ae = None

    def __enter__(self) -> DemoPacs:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def requests_of(self, service: str) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests if r["service"] == service]


__all__ = ["DemoPacs", "StudyRecord"]
