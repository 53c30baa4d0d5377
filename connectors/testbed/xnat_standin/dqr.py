"""The DICOM Query-Retrieve plugin (contract §8), as a test double: a study import request
really pulls the study from the configured PACS (a pynetdicom C-GET to the stand-in itself)
and archives it with subject/session from the relabel map.

As the plugin (NrgXnat/dicom-query-retrieve) behaves: ``POST /xapi/dqr/import`` needs the
receiving SCP (``aeTitle``, ``port``) and, with a relabel map and no ``forceImport``, an
enabled receiver with custom processing (BasicDicomQueryRetrieveService.queueStudyImport,
validateDicomScpInstance); it answers the queue rows. The dequeue thread
(PacsDequeueThread.runTask) takes a QUEUED (or FAILED) queue row, marks it PROCESSING,
creates a *new* history row (ExecutedPacsRequest) with the queue row's ``requestId`` and
status ISSUED before the C-MOVE, and on success deletes the queue row; on failure the
history row becomes FAILED and the queue row goes back to its prior status with one more
retry (a new history row next time), until ``dqrMaxPacsCMOVEAttempts``. Nothing in that
thread sets RECEIVED: a successful request stays ISSUED, and the study is known to have
arrived only by the archived session.

Where the stand-in is simpler than the plugin: it runs one dequeue worker for all requests
(the plugin runs PacsDequeueThreads per PACS up to the ``threads`` of the PACS's availability
window, PacsThreads.isOversubscribed, and sleeps ``(100 / utilizationPercent - 1)`` times a
request's duration after it); and it pulls the study by C-GET into itself instead of the
plugin's C-MOVE to the receiver ``aeTitle:port`` (checked and recorded, nothing listens on
it), then archives at once (the plugin asks for a prearchive rebuild after the C-MOVE,
submitPrearchiveSessionRebuildRequest)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import replace
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, StoragePresentationContexts, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)

from connectors.testbed.xnat_standin.importer import Instance, build_sessions
from connectors.testbed.xnat_standin.store import Conflict, DqrRequest, Store
from connectors.testbed.xnat_standin.web import (
    Answer,
    Faults,
    Request,
    Router,
    as_json,
    error,
    text,
)

logger = logging.getLogger(__name__)
OUR_AET = "XNATDQR"


def _ms() -> int:
    return int(time.time() * 1000)


def pacs_entry(server: Any, label: str) -> dict[str, Any]:
    """The plugin's entry for a PACS (``server``: Orthanc, the demo PACS: ``aet``, ``host``,
    ``port``), as the only one (id 1)."""
    return {
        "id": 1,
        "label": label,
        "aeTitle": server.aet,
        "host": server.host,
        "queryRetrievePort": server.port,
    }


class DqrPlugin:
    """``pacs`` entries: ``{"id", "label", "aeTitle", "host", "queryRetrievePort"}``
    (``pacs_entry``)."""

    MAX_ATTEMPTS = 3  # DqrPreferences.dqrMaxPacsCMOVEAttempts (its default is site-set)

    def __init__(self, store: Store, faults: Faults, pacs: list[dict[str, Any]]) -> None:
        self.store = store
        self.faults = faults
        self.fail_next = 0  # the next N executions fail (the C-MOVE is refused), then retried
        self.pacs = {int(p["id"]): p for p in pacs}
        self.jobs: queue.Queue[int | None] = queue.Queue()
        self._worker: threading.Thread | None = None

    def register(self, r: Router) -> None:
        r.add("GET", "/xapi/pacs", self.list_pacs)
        r.add("GET", "/xapi/pacs/{id}/status", self.pacs_status)
        r.add("GET", "/xapi/dicomscp", self.receivers)
        r.add("GET", "/xapi/dqr/settings/project/{p}/enabled", lambda q: text(200, "true"))
        r.add("POST", "/xapi/dqr/query/studies", self.query_studies)
        r.add("POST", "/xapi/dqr/import", self.import_request)
        r.add("GET", "/xapi/dqr/import/queue", lambda q: self.requests(q, history=False))
        r.add("GET", "/xapi/dqr/import/history", lambda q: self.requests(q, history=True))
        r.add("GET", "/xapi/dqr/import/queue/{id}", self.one_request)
        r.add("GET", "/xapi/dqr/import/history/{id}", self.one_request)

    def stop(self) -> None:
        if self._worker is not None:
            self.jobs.put(None)
            self._worker.join(timeout=10)
            self._worker = None

    # ------------------------------------------------------------------ endpoints

    def list_pacs(self, req: Request) -> Answer:
        return as_json(
            [
                {
                    "id": p["id"],
                    "label": p.get("label", f"PACS{p['id']}"),
                    "aeTitle": p["aeTitle"],
                    "host": p["host"],
                    "queryRetrievePort": p["queryRetrievePort"],
                    "queryable": True,
                    "defaultQueryRetrievePacs": True,
                    "storable": False,
                    "defaultStoragePacs": False,
                    "enabled": True,
                }
                for p in self.pacs.values()
            ]
        )

    def pacs_status(self, req: Request) -> Answer:
        p = self.pacs.get(int(req.args["id"]))
        if p is None:
            return error(404, "PACS not found")
        ok = self._associate(p) is not None
        return as_json({"pacsId": p["id"], "successful": ok, "pingTime": _ms()})

    def receivers(self, req: Request) -> Answer:
        return as_json(self.receivers_json())

    def receivers_json(self) -> list[dict[str, Any]]:
        """XNAT's DICOM SCP receivers (xnat-web DicomSCPApi ``/xapi/dicomscp``): one, with the
        custom processing DQR's relabelling needs."""
        return [
            {
                "id": 1,
                "aeTitle": OUR_AET,
                "port": 8104,
                "identifier": "dqrObjectIdentifier",
                "customProcessing": True,
                "enabled": True,
            }
        ]

    def query_studies(self, req: Request) -> Answer:
        body = req.read_json() or {}
        p = self.pacs.get(int(body.get("pacsId", 0) or 0))
        if p is None:
            return error(404, "PACS not found")
        ident = Dataset()
        ident.QueryRetrieveLevel = "STUDY"
        ident.AccessionNumber = body.get("accessionNumber", "")
        ident.StudyInstanceUID = body.get("studyInstanceUid", "")
        ident.PatientID = body.get("patientId", "")
        for key in ("StudyDate", "StudyDescription", "ModalitiesInStudy", "PatientName", "StudyID"):
            setattr(ident, key, "")
        assoc = self._associate(p)
        if assoc is None:
            return error(500, "Unable to connect to PACS")
        found = []
        try:
            for status, ds in assoc.send_c_find(ident, StudyRootQueryRetrieveInformationModelFind):
                if status and status.Status in (0xFF00, 0xFF01) and ds is not None:
                    date = str(ds.get("StudyDate", "") or "")
                    mods = ds.get("ModalitiesInStudy", "") or ""
                    found.append(
                        {
                            "studyInstanceUid": str(ds.StudyInstanceUID),
                            "studyId": str(ds.get("StudyID", "") or ""),
                            "studyDescription": str(ds.get("StudyDescription", "") or ""),
                            "accessionNumber": str(ds.get("AccessionNumber", "") or ""),
                            "studyDate": f"{date[:4]}-{date[4:6]}-{date[6:8]}" if date else "",
                            "modalitiesInStudy": list(mods)
                            if not isinstance(mods, str)
                            else [mods],
                            "patient": {"id": str(ds.get("PatientID", "") or ""), "name": ""},
                        }
                    )
        finally:
            assoc.release()
        return as_json(found) if found else text(204, "")

    def import_request(self, req: Request) -> Answer:
        body = req.read_json() or {}
        pacs_id = int(body.get("pacsId", 0) or 0)
        project = str(body.get("projectId", ""))
        if pacs_id not in self.pacs:
            return error(404, "PACS not found")
        ae, port = str(body.get("aeTitle") or ""), int(body.get("port") or 0)
        if not ae or not port:  # the receiver the PACS must send to
            return error(400, "aeTitle and port of the receiving DICOM SCP are required")
        relabel = any(s.get("relabelMap") for s in body.get("studies") or [])
        scp = next(
            (r for r in self.receivers_json() if (r["aeTitle"], r["port"]) == (ae, port)), None
        )
        if scp is None or not scp["enabled"]:
            return error(400, f"No enabled DICOM SCP receiver {ae}:{port}")
        if relabel and not body.get("forceImport") and not scp["customProcessing"]:
            return error(400, f"DICOM SCP receiver {ae}:{port} has no custom processing")
        with self.store.lock:
            if project not in self.store.projects:
                return error(404, f"Project {project} not found")
            out = []
            for study in body.get("studies") or []:
                rid = self.store.next_request_id()
                r = DqrRequest(
                    id=rid,
                    username=req.user or "",
                    pacs_id=pacs_id,
                    project=project,
                    study_uid=str(study.get("studyInstanceUid", "")),
                    relabel=dict(study.get("relabelMap") or {}),
                    destination=f"{ae}:{port}",
                    request_id=f"{rid}-{_ms()}",
                    queued_time=_ms(),
                    accession=str((study.get("relabelMap") or {}).get("Session", "")),
                )
                self.store.dqr[rid] = r
                out.append(r.as_json())
                self.jobs.put(rid)
        self._ensure_worker()
        return as_json(out)

    def requests(self, req: Request, history: bool) -> Answer:
        with self.store.lock:
            table = self.store.dqr_history if history else self.store.dqr
            rows = [r.as_json() for r in table.values()]
        rows.sort(key=lambda r: r["id"], reverse=True)
        return as_json(rows)

    def one_request(self, req: Request) -> Answer:
        history = "/history/" in req.path
        with self.store.lock:
            table = self.store.dqr_history if history else self.store.dqr
            r = table.get(int(req.args["id"]))
            if r is None:
                return error(404, "Request not found")
            return as_json(r.as_json())

    # ------------------------------------------------------------------ the worker

    def _ensure_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._run, name="standin-dqr", daemon=True)
            self._worker.start()

    def _set(self, r: DqrRequest, status: str, message: str = "") -> None:
        with self.store.lock:
            r.status = status
            r.message = message

    def _run(self) -> None:
        while True:
            rid = self.jobs.get()
            if rid is None:
                return
            queued = self.store.dqr[rid]
            prior = queued.status
            self._set(queued, "PROCESSING")
            with self.store.lock:  # a new history row per execution, ISSUED before the C-MOVE
                hid = self.store.next_request_id()
                done = replace(queued, id=hid, status="ISSUED", executed_time=_ms())
                self.store.dqr_history[hid] = done
            try:
                self._execute(queued)
            except Exception as e:
                logger.warning("stand-in DQR request %s failed: %s", rid, e)
                self._set(done, "FAILED", str(e))
                with self.store.lock:
                    queued.retries += 1
                    if queued.retries < self.MAX_ATTEMPTS:
                        queued.status = prior  # rolled back and taken again: a new history row
                        self.jobs.put(rid)
                    else:
                        self.store.dqr.pop(rid, None)
                continue
            with self.store.lock:
                self.store.dqr.pop(rid, None)  # closeRequest: success leaves the queue

    def _execute(self, r: DqrRequest) -> None:
        with self.store.lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                raise RuntimeError("C-MOVE failed: the PACS refused the move (fault)")
        p = self.pacs[r.pacs_id]
        got: list[Instance] = []
        assoc = self._associate(p, retrieve=True, sink=got)
        if assoc is None:
            raise RuntimeError("PACS unreachable")
        ident = Dataset()
        ident.QueryRetrieveLevel = "STUDY"
        ident.StudyInstanceUID = r.study_uid
        try:
            for _status, _ds in assoc.send_c_get(ident, StudyRootQueryRetrieveInformationModelGet):
                pass
        finally:
            assoc.release()
        if self.faults.dqr_stuck:
            return  # the study never arrives: the history row stays ISSUED forever
        if not got:
            raise RuntimeError("no images received")
        sessions, _ = build_sessions(
            iter(got), r.project, r.relabel.get("Session"), drop=self.faults.drop_files
        )
        with self.store.lock:
            for sess, header_subject in sessions:
                try:
                    self.store.archive(sess, r.relabel.get("Subject") or header_subject, True)
                except Conflict as c:
                    # the files reached the receiver; archiving failed (the prearchive keeps
                    # them, CONFLICT): the plugin's request itself stays ISSUED
                    logger.warning("stand-in DQR archive of %s failed: %s", r.study_uid, c)

    def _associate(self, p: dict[str, Any], retrieve: bool = False, sink: Any = None) -> Any:
        ae = AE(ae_title=OUR_AET)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        handlers: list[Any] = []
        roles: list[Any] = []
        if retrieve:
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
            for cx in StoragePresentationContexts[:120]:
                syntax = str(cx.abstract_syntax)
                ae.add_requested_context(syntax)
                roles.append(build_role(syntax, scp_role=True))
            handlers = [(evt.EVT_C_STORE, _store_handler, [sink])]
        else:
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = ae.associate(
            p["host"],
            int(p["queryRetrievePort"]),
            ae_title=p["aeTitle"],
            ext_neg=roles,
            evt_handlers=handlers,
        )
        return assoc if assoc.is_established else None


def _store_handler(event: Any, sink: list[Instance]) -> int:
    try:
        ds = event.dataset
        size = len(event.request.DataSet.getvalue())
        sink.append(Instance.from_dataset(ds, size))
    except Exception:
        return 0xC210
    return 0x0000
