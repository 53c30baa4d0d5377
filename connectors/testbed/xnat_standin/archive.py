"""The import service (contract §6) and the prearchive (§7)."""

from __future__ import annotations

import datetime as dt
import time
import zipfile

from connectors.testbed.xnat_standin.importer import (
    ImportRejected,
    build_sessions,
    drain,
    iter_instances,
    spool_body,
)
from connectors.testbed.xnat_standin.store import Conflict, PrearchiveEntry, Session, Store
from connectors.testbed.xnat_standin.web import Answer, Faults, Request, Router, error, text

ZIP_TYPES = {
    "application/zip",
    "application/x-zip-compressed",
    "multipart/x-zip",
}
HANDLERS = {"DICOM-zip", "SI", "dicom-zip"}


# Archive time per file: NRG's performance test TestPerformanceDicom.testLargeSession
# (NrgXnat/xnat-rest-tests src/test/java/org/nrg/testing/xnat/tests/performance/
# TestPerformanceDicom.java) C-STOREs 2,000 MR images into a manual-archive project, then times
# "rebuild-and-archive-large-study": rebuild + archive of the one prearchive session until
# the prearchive is empty. Its recorded runs (src/test/resources/data/performance/
# rebuild-and-archive-large-study.json): 48.8-51.4 s on 1.8.0.1 to 1.8.10.1, but 14.3 s on
# 1.7.6 and 16.6 s in a later 1.8.10.1 run (Jan 2025). The harsher ~50 s is kept; it is for
# a C-STORE-received session, the import service's own archive time is not measured there.
# The stand-in is given a scaled-down figure.
REAL_SECONDS_PER_FILE = 50 / 2000


def register(r: Router, store: Store, faults: Faults, seconds_per_file: float = 0.0) -> _Archive:
    """The routes; returns the handler (tests change its ``seconds_per_file``). The import
    service is xnat-web's restlet/services/Importer with the DICOM-zip handler
    (DicomZipImporter → GradualDicomImporter per entry); the prearchive list, item, delete
    and archive services are the prearchive restlets over PrearcDatabase; an unknown project
    sends the upload to Unassigned (PrearcUtils), which cannot be archived from there."""
    h = _Archive(store, faults, seconds_per_file)
    r.add("POST", "/data/services/import", h.import_)
    r.add("GET", "/data/prearchive/projects", h.prearchive)
    r.add("GET", "/data/prearchive/projects/{p}", h.prearchive)
    r.add("GET", "/data/prearchive/projects/{p}/{ts}/{name}", h.prearchive_one)
    r.add("DELETE", "/data/prearchive/projects/{p}/{ts}/{name}", h.prearchive_delete)
    r.add("POST", "/data/services/archive", h.archive_service)
    r.add("POST", "/data/services/prearchive/delete", h.delete_service)
    return h


def _strip_data(uri: str) -> str:
    return uri[len("/data") :] if uri.startswith("/data/") else uri


def _uri(session: Session, store: Store) -> str:
    """The archived session's URI, with the labels XNAT gave it (cleaned; the subject's as
    it was first created when matched ignoring case)."""
    subject = store.subjects.get(session.subject_id)
    subject_label = subject.label if subject else ""
    return (
        f"/data/archive/projects/{session.project}/subjects/{subject_label}"
        f"/experiments/{session.label}\r\n"
    )


class _Archive:
    def __init__(self, store: Store, faults: Faults, seconds_per_file: float) -> None:
        self.store = store
        self.faults = faults
        self.seconds_per_file = seconds_per_file

    def import_(self, req: Request) -> Answer:
        handler = req.param("import-handler") or "DICOM-zip"
        if handler not in HANDLERS:
            drain(req.environ)
            return error(404, f"Unknown import handler {handler}")
        if req.content_type not in ZIP_TYPES:
            drain(req.environ)
            return error(400, "Unsupported format")
        dest = _strip_data(req.param("dest") or "")
        project = req.param("project") or req.param("PROJECT_ID") or ""
        subject = req.param("subject") or req.param("SUBJECT_ID")
        label = req.param("session") or req.param("EXPT_LABEL")
        overwrite = req.param("overwrite")
        spool, size = spool_body(req.environ)
        with spool:
            if size == 0:
                return error(400, "In-body File posts must include the file directly")
            with self.store.lock:
                known = project in self.store.projects
            target = project if known else "Unassigned"
            try:
                built, _ = build_sessions(
                    iter_instances(spool), target, label, drop=self.faults.drop_files
                )
            except ImportRejected as e:
                return error(e.status, str(e))
            if self.store.uploads is not None:
                spool.seek(0)
                with zipfile.ZipFile(spool) as zf:
                    got = [zf.read(i) for i in zf.infolist() if not i.is_dir()]
                with self.store.lock:
                    self.store.uploads.extend(got)
        if not built:
            return error(400, "The upload held no DICOM files")
        timestamp = dt.datetime.now().strftime("%Y%m%d_%H%M%S%f")[:-3]
        to_archive = dest.startswith("/archive") and known
        answers = []
        for sess, header_subject in built:
            subj_label = subject or header_subject
            with self.store.lock:
                entry = self.store.receive(target, timestamp, sess, subj_label)
                # the zip is read: the session XML is built, then the row is READY
                # (xnat-web DicomZipImporter.xmlBuild, PrearchiveRebuildHandler.rebuild)
                entry.status = "BUILDING"
            with self.store.lock:
                if entry.status == "BUILDING":
                    entry.status = "READY"
            if not to_archive:
                answers.append(f"/data{entry.url}\r\n")
                continue
            done = self._archive(entry, subj_label, merge=overwrite is not None)
            if isinstance(done, Answer):
                return done
            answers.append(_uri(done, self.store))
        return text(200, "".join(answers))

    def _archive(self, entry: PrearchiveEntry, subject: str, merge: bool) -> Session | Answer:
        """Archive one prearchive row inside the import request, as ``dest=/archive`` does
        (xnat-web DicomZipImporter.archiveSession: status ARCHIVING, then
        PrearcDatabase.archive → PrearcSessionArchiver.call, synchronously). It takes time in
        proportion to the files (``seconds_per_file``); the session is saved into the project
        at the end, after its files are moved (PrearcSessionArchiver.call). A failure leaves
        the row CONFLICT and answers 400 with a message that names no status: DicomZipImporter
        wraps every archive exception as ``ClientException("unable to archive for the
        Prearchive session")``; the wording differs between versions, so clients cannot rely
        on it (the harsher reading: only the 400 is certain)."""
        key = (entry.project, entry.session.label)
        with self.store.lock:
            if key in self.store.archiving:
                entry.status = "READY"
                return error(423, "Duplicate archive attempt.  Destination session in use.")
            self.store.archiving.add(key)
            entry.status = "ARCHIVING"
            seconds = self.seconds_per_file * entry.session.file_count()
        try:
            if seconds > 0:
                time.sleep(seconds)
            with self.store.lock:
                try:
                    done = self.store.archive(entry.session, subject, merge=merge)
                except Conflict as e:
                    entry.status = "CONFLICT"
                    return error(400, f"unable to archive for the Prearchive session: {e}")
                if entry in self.store.prearchive:  # a client may have deleted it meanwhile
                    self.store.prearchive.remove(entry)
                return done
        finally:
            with self.store.lock:
                self.store.archiving.discard(key)

    def _rows(self, project: str | None) -> list[dict[str, str]]:
        return [
            {
                "project": e.project,
                "timestamp": e.timestamp,
                "lastmod": e.uploaded,
                "uploaded": e.uploaded,
                "scan_date": e.session.date,
                "scan_time": e.session.time,
                "subject": e.subject,
                "folderName": e.name,
                "name": e.name,
                "tag": e.uid,
                "status": e.status,
                "url": e.url,
                "autoarchive": "AutoArchive",
                "prevent_anon": "false",
                "prevent_auto_commit": "false",
                "SOURCE": "",
                "VISIT": "",
                "PROTOCOL": "",
                "TIMEZONE": "",
            }
            for e in self.store.prearchive
            if project is None or e.project == project
        ]

    def prearchive(self, req: Request) -> Answer:
        from connectors.testbed.xnat_standin.web import result_set

        with self.store.lock:
            rows = self._rows(req.args.get("p"))
        return result_set(rows)

    def _entry(self, url: str) -> PrearchiveEntry | None:
        url = _strip_data(url).rstrip("/")
        for e in self.store.prearchive:
            if e.url == url:
                return e
        return None

    def prearchive_one(self, req: Request) -> Answer:
        from connectors.testbed.xnat_standin.web import result_set

        a = req.args
        with self.store.lock:
            e = self._entry(f"/prearchive/projects/{a['p']}/{a['ts']}/{a['name']}")
            if e is None:
                return error(404, "Unknown prearchive session")
            rows = [r for r in self._rows(e.project) if r["url"] == e.url]
        return result_set(rows)

    def prearchive_delete(self, req: Request) -> Answer:
        a = req.args
        with self.store.lock:
            e = self._entry(f"/prearchive/projects/{a['p']}/{a['ts']}/{a['name']}")
            if e is None:
                return error(404, "Unknown prearchive session")
            self.store.prearchive.remove(e)
        return text(200, "")

    def delete_service(self, req: Request) -> Answer:
        srcs = req.params.get("src") or req.read_form().get("src") or []
        with self.store.lock:
            for src in srcs:
                e = self._entry(src)
                if e is None:
                    return error(404, f"{src} not found.")
                self.store.prearchive.remove(e)
        return text(200, "")

    def archive_service(self, req: Request) -> Answer:
        params = dict(req.params)
        if not params.get("src"):
            params |= req.read_form()
        src = (params.get("src") or [""])[0]
        overwrite = (params.get("overwrite") or [""])[0]
        with self.store.lock:
            e = self._entry(src)
            if e is None:
                return error(404, "Unknown prearchive session")
            if e.project == "Unassigned":
                return error(400, "Cannot archive sessions from the Unassigned folder.")
            if "project" in params and params["project"][0] not in self.store.projects:
                return error(403, "Invalid permissions for new project.")
            sess = e.session
            sess.label = (params.get("session") or [sess.label])[0]
            subject = (params.get("subject") or [e.subject])[0]
            try:
                done = self.store.archive(sess, subject, merge=overwrite in ("append", "delete"))
            except Conflict as c:
                e.status = "CONFLICT"
                return error(409, str(c))
            self.store.prearchive.remove(e)
        return text(200, _uri(done, self.store), "text/uri-list")
