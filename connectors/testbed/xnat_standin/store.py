"""The stand-in XNAT's state: projects, subjects, sessions, scans, prearchive, DQR requests.

In memory, guarded by one lock. Files are not kept, only what XNAT would know about them: per
scan the SOP Instance UIDs (so re-sending a file adds nothing, as in XNAT) and their byte sizes.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

MODALITY_TYPES = {
    "CT": "xnat:ctSessionData",
    "MR": "xnat:mrSessionData",
    "PT": "xnat:petSessionData",
    "CR": "xnat:crSessionData",
    "DX": "xnat:dxSessionData",
    "US": "xnat:usSessionData",
}
SCAN_TYPES = {
    "CT": "xnat:ctScanData",
    "MR": "xnat:mrScanData",
    "PT": "xnat:petScanData",
    "CR": "xnat:crScanData",
    "DX": "xnat:dxScanData",
    "US": "xnat:usScanData",
}
OTHER_SESSION = "xnat:otherDicomSessionData"
OTHER_SCAN = "xnat:otherDicomScanData"


# The characters XNAT replaces with "_" in session and subject labels when it archives
# (xnat-web BaseXnatImagesessiondata.cleanValue, called by PrearcSessionArchiver.fixSessionLabel
# and fixSubject).
CLEANED = " `~@#$%^&*()+=[]{}|\\/?:;\"',.<>"


def clean_value(label: str) -> str:
    """A label as XNAT archives it (``BaseXnatImagesessiondata.cleanValue``)."""
    return "".join("_" if c in CLEANED else c for c in label)


def now_text() -> str:
    return dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


@dataclass
class Scan:
    id: str
    uid: str
    modality: str
    series_description: str = ""
    files: dict[str, int] = field(default_factory=dict)  # SOP Instance UID -> bytes
    # Files of the scan's SNAPSHOTS resource (a thumbnail and a full-size GIF). XNAT makes
    # them with its snapshot generation; whether that runs at archive time or on first view
    # differs between versions and sites (the sources leave it open): the stand-in takes the
    # harsher reading, present right after archiving, so that "all files of the session" is
    # never the number of DICOM files sent.
    snapshots: int = 0

    @property
    def xsi_type(self) -> str:
        return SCAN_TYPES.get(self.modality, OTHER_SCAN)


@dataclass
class Subject:
    id: str
    project: str
    label: str
    insert_date: str = field(default_factory=now_text)


@dataclass
class Session:
    id: str
    project: str
    subject_id: str
    label: str
    uid: str
    modality: str
    date: str = ""
    time: str = ""
    accession: str = ""
    insert_date: str = field(default_factory=now_text)
    scans: dict[str, Scan] = field(default_factory=dict)  # by Series Instance UID

    @property
    def xsi_type(self) -> str:
        return MODALITY_TYPES.get(self.modality, OTHER_SESSION)

    def file_count(self) -> int:
        return sum(len(s.files) for s in self.scans.values())


# Prearchive row states (xnat-web PrearcUtils.PrearcStatus). A new upload of the same
# (project, Study UID, name) reopens a row that is RECEIVING or "interruptable" (READY, ERROR,
# CONFLICT: set back to RECEIVING), marks a BUILDING one RECEIVING_INTERRUPT, and gets a new row
# beside one that is ARCHIVING/MOVING/DELETING (xnat-web PrearcDatabase.eitherGetOrCreateSession,
# its predicate()).
REOPENED = ("RECEIVING", "RECEIVING_INTERRUPT", "READY", "ERROR", "CONFLICT")


@dataclass
class PrearchiveEntry:
    project: str
    timestamp: str
    name: str
    subject: str
    uid: str
    status: str
    session: Session  # what would be archived (not yet in the project)
    uploaded: str = field(default_factory=now_text)

    @property
    def url(self) -> str:
        return f"/prearchive/projects/{self.project}/{self.timestamp}/{self.name}"


@dataclass
class DqrRequest:
    """A DQR request: a queue row (``QueuedPacsRequest``) or a history row
    (``ExecutedPacsRequest``) of NrgXnat/dicom-query-retrieve; both carry the ``requestId``
    that links the history rows made for one queued request."""

    id: int
    username: str
    pacs_id: int
    project: str
    study_uid: str
    relabel: dict[str, str]
    destination: str = ""  # "AETITLE:PORT" of the XNAT receiver the PACS sends to
    request_id: str = ""
    status: str = "QUEUED"
    queued_time: int = 0
    executed_time: int | None = None
    accession: str = ""
    patient_id: str = ""
    message: str = ""
    retries: int = 0

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "requestId": self.request_id,
            "username": self.username,
            "pacsId": self.pacs_id,
            "xnatProject": self.project,
            "studyInstanceUid": self.study_uid,
            "seriesIds": [],
            "remappingScript": "",
            "destinationAeTitle": self.destination,
            "status": self.status,
            "priority": 1,
            "queuedTime": self.queued_time,
            "accessionNumber": self.accession,
            "patientId": self.patient_id,
            "retries": self.retries,
        }
        if self.executed_time is not None:
            out["executedTime"] = self.executed_time
        if self.message:
            out["errorMessage"] = self.message
        return out


class Store:
    """Everything the stand-in knows. Call its methods with ``self.lock`` held."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.projects: dict[str, dict[str, str]] = {}
        self.subjects: dict[str, Subject] = {}  # by ID
        self.sessions: dict[str, Session] = {}  # by ID
        self.prearchive: list[PrearchiveEntry] = []
        self.dqr: dict[int, DqrRequest] = {}  # the DQR queue (rows leave it when done)
        self.dqr_history: dict[int, DqrRequest] = {}  # one row per execution
        self.prearchive_codes: dict[str, str] = {}  # project -> code (default "4": auto)
        self._next = {"S": 0, "E": 0, "R": 0}
        self.sessions_by_key: dict[tuple[str, str], str] = {}  # (project, label) -> ID
        #: set to a list to keep every DICOM file the import service received, byte for byte
        #: (tests that check what reached XNAT as the PACS holds it)
        self.uploads: list[bytes] | None = None
        #: set to a Random to cut each paged listing from rows in an arbitrary order (``listing``)
        self.page_order: random.Random | None = None
        # (project, label) of sessions being archived now: a second archive of one gets 423
        # "Duplicate archive attempt" (xnat-web PrearcSessionArchiver.call, its lock())
        self.archiving: set[tuple[str, str]] = set()
        #: seconds a subject PUT spends between looking its label up and saving a new subject
        #: (``put_subject``); tests widen it to show two PUTs of one new label racing
        self.subject_save_seconds = 0.0

    def receive(
        self, project: str, timestamp: str, built: Session, subject: str
    ) -> PrearchiveEntry:
        """The prearchive row an upload's files go into: an open row of the same (project,
        Study UID, name) takes them (RECEIVING again), else a new RECEIVING row (xnat-web
        PrearcDatabase.eitherGetOrCreateSession; GradualDicomImporter creates rows RECEIVING)."""
        for e in self.prearchive:
            if (e.project, e.uid, e.name) == (project, built.uid, built.label):
                if e.status == "BUILDING":
                    e.status = "RECEIVING_INTERRUPT"
                elif e.status in REOPENED:
                    e.status = "RECEIVING"
                else:
                    continue
                for uid, scan in built.scans.items():
                    target = e.session.scans.setdefault(uid, scan)
                    if target is not scan:
                        target.files.update(scan.files)
                e.uploaded = now_text()
                return e
        entry = PrearchiveEntry(
            project, timestamp, built.label, subject, built.uid, "RECEIVING", built
        )
        self.prearchive.append(entry)
        return entry

    def new_id(self, kind: str) -> str:
        self._next[kind] += 1
        return f"XNAT_{kind}{self._next[kind]:05d}"

    def next_request_id(self) -> int:
        self._next["R"] += 1
        return self._next["R"]

    def add_project(self, project_id: str, name: str = "") -> None:
        self.projects[project_id] = {
            "ID": project_id,
            "name": name or project_id,
            "secondary_ID": project_id,
            "description": "stand-in project",
            "pi_firstname": "",
            "pi_lastname": "",
        }

    def subject_by_label(
        self, project: str, label: str, ignore_case: bool = False
    ) -> Subject | None:
        """By label within the project, or by ID. ``ignore_case``: as the archiver looks a
        subject up (xnat-web PrearcSessionArchiver.retrieveMatchingSubject, XNAT-2865:
        ``GetSubjectByProjectIdentifierCaseInsensitive``)."""
        for s in self.subjects.values():
            same = s.label.lower() == label.lower() if ignore_case else s.label == label
            if s.project == project and (same or s.id == label):
                return s
        return None

    def ensure_subject(
        self, project: str, label: str, ignore_case: bool = False
    ) -> tuple[Subject, bool]:
        found = self.subject_by_label(project, label, ignore_case)
        if found:
            return found, False
        return self._new_subject(project, label), True

    def _new_subject(self, project: str, label: str) -> Subject:
        """A new subject with the next ID (xnat-web ``XnatSubjectdata.CreateNewID``)."""
        subj = Subject(self.new_id("S"), project, label)
        self.subjects[subj.id] = subj
        return subj

    def put_subject(self, project: str, label: str) -> tuple[Subject, bool]:
        """PUT /data/projects/{p}/subjects/{label} as xnat-web SubjectResource.handlePut does
        it: the label is looked up (``XnatSubjectdata.GetSubjectByProjectIdentifier``), the item
        and its workflow are built, and a subject found missing is saved with a new ID
        (``CreateNewID``) without looking again, so two PUTs of one new label at once make two
        subjects. Call it *without* the lock held."""
        with self.lock:
            found = self.subject_by_label(project, label)
        if found:
            return found, False
        time.sleep(self.subject_save_seconds)
        with self.lock:
            return self._new_subject(project, label), True

    def session_by_label(self, project: str, label: str) -> Session | None:
        sid = self.sessions_by_key.get((project, label))
        if sid is None and label in self.sessions and self.sessions[label].project == project:
            sid = label
        return self.sessions.get(sid) if sid else None

    def project_sessions(self, project: str) -> list[Session]:
        return [s for s in self.sessions.values() if s.project == project]

    def archive(self, built: Session, subject_label: str, merge: bool) -> Session:
        """Put a built session into the project (creating the subject); merge or conflict.
        Labels are cleaned first and the subject matched ignoring case, as the archiver does
        (xnat-web PrearcSessionArchiver.fixSessionLabel, fixSubject)."""
        built.label = clean_value(built.label)
        subj, _ = self.ensure_subject(built.project, clean_value(subject_label), ignore_case=True)
        existing = self.session_by_label(built.project, built.label)
        if existing is not None:
            if existing.subject_id != subj.id or existing.uid != built.uid:
                raise Conflict(
                    409,
                    "Invalid modification of session "
                    f"{'subject' if existing.subject_id != subj.id else 'UID'} via archive process",
                )
            if not merge:
                raise Conflict(400, "Failed to archive 1 of 1 session(s)")
            for uid, scan in built.scans.items():
                target = existing.scans.setdefault(uid, scan)
                if target is not scan:
                    target.files.update(scan.files)
                target.snapshots = 2
            return existing
        for scan in built.scans.values():
            scan.snapshots = 2
        built.id = self.new_id("E")
        built.subject_id = subj.id
        self.sessions[built.id] = built
        self.sessions_by_key[(built.project, built.label)] = built.id
        return built

    def delete_session(self, session_id: str) -> bool:
        s = self.sessions.pop(session_id, None)
        if s is None:
            return False
        self.sessions_by_key.pop((s.project, s.label), None)
        return True


class Conflict(Exception):
    """An archive refused, with the HTTP status XNAT gives it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
