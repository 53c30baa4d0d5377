"""The loader's shared types: a manifest ``Study``, an attempt's ``Outcome`` and the
``LoadContext`` the mode runners (``direct.py``, ``dqr.py``) share with ``runner.py``."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from connectors.clock import utcnow
from connectors.errors import StudyFailed, XnatUnreachable
from connectors.load.claims import Claims
from connectors.load.manifest_watch import ManifestWatch
from connectors.load.retry_policy import RetryPolicy
from connectors.pacs.throttle import Throttle
from connectors.warehouse.journal import append_or_journal
from connectors.warehouse.runs import RunContext
from connectors.windows import WindowGate, Windows
from connectors.xnat.client import XnatClient

UNAVAILABLE_LIMIT = 3  # studies in a row failed as xnat_unavailable: XNAT is down, stop (exit 3)


@dataclass(frozen=True)
class Study:
    """One row of the ``ingest_manifest`` mart."""

    study_instance_uid: str
    accession_number: str | None
    nhs_number: str | None
    subject_label: str
    session_label: str
    study_date: Any = None
    modalities: str | None = None
    expected: int | None = None
    ingest_action: str = "load"  # or "xnat_conflict": XNAT gives the label to another study
    xnat_session_id: str | None = None  # the session holding the label (xnat_conflict)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Study:
        n: Any = row.get("number_of_study_related_instances")
        return cls(
            study_instance_uid=str(row["study_instance_uid"]),
            accession_number=row.get("accession_number"),
            nhs_number=row.get("nhs_number"),
            subject_label=str(row["subject_label"]),
            session_label=str(row["session_label"]),
            study_date=row.get("study_date"),
            modalities=row.get("modalities_in_study"),
            expected=int(n) if n not in (None, "") else None,
            ingest_action=str(row.get("ingest_action") or "load"),
            xnat_session_id=row.get("xnat_session_id"),
        )


@dataclass
class Outcome:
    """What one attempt ended with; becomes a ``raw.ingest_attempts`` row."""

    outcome: str  # loaded | already_present | failed
    reason_category: str | None = None
    message: str | None = None
    files_expected: int | None = None
    files_received: int | None = None
    files_archived: int | None = None
    bytes_transferred: int | None = None
    xnat_session_id: str | None = None
    #: instances received as the PACS stores them / converted / converted lossless -> lossy
    #: (None: the PACS did not say what it stores)
    instances_as_stored: int | None = None
    instances_converted: int | None = None
    instances_lossy_converted: int | None = None

    @classmethod
    def failed(cls, e: StudyFailed, **counts: Any) -> Outcome:
        stored, converted, lossy = e.conversions
        counts.setdefault("instances_as_stored", stored)
        counts.setdefault("instances_converted", converted)
        counts.setdefault("instances_lossy_converted", lossy)
        return cls(
            "failed",
            e.reason_category,
            str(e),
            files_expected=counts.pop("files_expected", e.files_expected),
            files_received=counts.pop("files_received", e.files_received),
            **counts,
        )


@dataclass
class LoadContext:
    """What the mode runners share: the run, the client, the recorder and the tallies."""

    rc: RunContext
    client: XnatClient
    mode: str
    method: str
    policy: RetryPolicy
    tallies: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[Study, Outcome]] = field(default_factory=list)
    bytes_loaded: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    #: held around creating a subject: uploads in flight never PUT one new label twice at once
    subject_lock: threading.Lock = field(default_factory=threading.Lock)
    on_done: Callable[[Study, Outcome, bool], None] | None = None
    unavailable_in_a_row: int = 0
    finished: set[str] = field(default_factory=set)  # Study UIDs with their final attempt row
    manifest: ManifestWatch | None = None  # the manifest as the admin rebuilds it meanwhile

    def still_wanted(self, study: Study) -> bool:
        """Whether to start ``study``: it is still in the manifest (read again now and then;
        ``manifest_watch.py``). A study in hand is never asked again."""
        return self.manifest is None or self.manifest.wanted(study.study_instance_uid)

    gate: WindowGate = field(default_factory=lambda: WindowGate(Windows()))  # [pacs] windows
    not_started: int = 0  # studies left for the next window (--no-wait)
    throttle: Throttle = field(init=False)  # [pacs] caps and the adaptive back-off

    def __post_init__(self) -> None:
        self.throttle = Throttle(self.rc.settings.pacs)

    def admit(self) -> bool:
        """Before a study's retrieval starts: inside a PACS window (after waiting for one)?
        False with --no-wait outside one: the study is left for the rerun."""
        if self.gate.admit():
            return True
        with self._lock:
            self.not_started += 1
        return False

    claims: Claims = field(default_factory=Claims)  # several loaders on PostgreSQL: claims.py
    busy_elsewhere: set[str] = field(default_factory=set)  # claimed by another loader: later
    done_elsewhere: set[str] = field(default_factory=set)  # loaded by another loader meanwhile

    def record(self, study: Study, started: dt.datetime, out: Outcome, final: bool = True) -> None:
        """Append the attempt's row now, in its own short transaction (so a crash loses
        nothing that happened, and the warehouse is free between attempts); journaled
        (``warehouse/journal.py``) while another command holds the warehouse."""
        row = {
            "run_id": self.rc.run_id,
            "loaded_at": utcnow(),
            "attempt_id": str(uuid.uuid4()),
            "study_instance_uid": study.study_instance_uid,
            "accession_number": study.accession_number,
            "nhs_number": study.nhs_number,
            "subject_label": study.subject_label,
            "session_label": study.session_label,
            "mode": self.mode,
            "retrieve_method": self.method,
            "started_at": started,
            "finished_at": utcnow(),
            "outcome": out.outcome,
            "reason_category": out.reason_category,
            "message": out.message,
            "files_expected": out.files_expected,
            "files_received": out.files_received,
            "files_archived": out.files_archived,
            "bytes_transferred": out.bytes_transferred,
            "xnat_session_id": out.xnat_session_id,
            "instances_as_stored": out.instances_as_stored,
            "instances_converted": out.instances_converted,
            "instances_lossy_converted": out.instances_lossy_converted,
        }
        with self._lock:  # into the warehouse, or its journal while another holds it
            append_or_journal(self.rc.warehouse, {"ingest_attempts": [row]})
            if final:
                self.claims.release(study.study_instance_uid)
                self.finished.add(study.study_instance_uid)
                down = out.reason_category == "xnat_unavailable"
                self.unavailable_in_a_row = self.unavailable_in_a_row + 1 if down else 0
                self.tallies[out.outcome] = self.tallies.get(out.outcome, 0) + 1
                if out.outcome == "failed":
                    self.failures.append((study, out))
                if out.outcome == "loaded":
                    self.bytes_loaded += out.bytes_transferred or 0
        if self.on_done is not None:
            self.on_done(study, out, final)
        if self.unavailable_in_a_row >= UNAVAILABLE_LIMIT:
            raise XnatUnreachable(
                f"XNAT failed {UNAVAILABLE_LIMIT} studies in a row after retries "
                f"({out.message}); stopping: rerun load when XNAT is back"
            )

    def find_study_session(self, study: Study) -> dict[str, str] | None:
        """The project's session of this study: by Study Instance UID first (what XNAT keeps
        whatever it does to labels), then by label."""
        return self.client.find_study(study.study_instance_uid, study.session_label)

    def check_before_upload(self, study: Study) -> Outcome | None:
        """The one look at XNAT made just before a study is sent (the manifest decided from
        the last sync; XNAT may have it since: another run, DQR, or a try of ours that timed
        out and was archived after all). None when the label is free."""
        row = self.find_study_session(study)
        if row is None:
            return None
        sid, uid = row["ID"], row.get("UID") or ""
        if uid and uid != study.study_instance_uid:
            return Outcome(
                "failed",
                "xnat_conflict",
                f"session {study.session_label} exists in XNAT ({sid}) with another Study UID",
                files_expected=study.expected,
                xnat_session_id=sid,
            )
        return Outcome("already_present", xnat_session_id=sid, files_expected=study.expected)

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retry ``attempt + 1``: ``backoff_seconds`` doubling."""
        return float(self.rc.settings.load.backoff_seconds) * (2**attempt)

    def retry(self, e: StudyFailed, attempt: int) -> bool:
        """Whether to try again after ``e`` on try ``attempt`` (0-based): the seed says the
        reason is transient and ``[load] retries`` is not spent."""
        return attempt < self.rc.settings.load.retries and self.policy.is_transient(
            e.reason_category
        )
