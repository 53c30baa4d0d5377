"""One process's retrieval: C-GET or C-MOVE of whole studies on reused associations.

Each instance is written to ``dest/<SOPInstanceUID>.dcm`` as it arrives, as received (no decode,
one instance in memory at a time; ``connectors/pacs/storage.py``). The count is checked against
``expected`` (the PACS's Number of Study Related Instances) and against the PACS's own sub-
operation counts. Failures are ``StudyFailed`` with a reason category from
``seeds/failure_reasons.csv``; no association at all is ``PacsUnreachable`` (exit 3).

Speed (benchmarks/load/README.md): TCP_NODELAY on our sockets and a fast DUL reactor while a
transfer runs (``pacs/net.py``, ``pace.py``) double pynetdicom's throughput; the optional dcmtk
back end (``dcmtk.py``) reaches getscu's.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from pynetdicom import build_role, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from connectors.config import Settings
from connectors.errors import ConfigError, StudyFailed
from connectors.pacs.net import make_ae, open_association
from connectors.pacs.retrieve.dcmtk import DcmtkBackend
from connectors.pacs.retrieve.dimse import SubOperations, consume, find_study, identifier
from connectors.pacs.retrieve.pace import fast_reactor
from connectors.pacs.storage import (
    StudySink,
    abstract_syntax,
    encoded_instance,
    get_storage_contexts,
)
from connectors.pacs.storage_scp import MoveReceiver

logger = logging.getLogger(__name__)

WARNING_SUBOPS = 0xB000


@dataclass(frozen=True)
class RetrievedStudy:
    """One study on disk: ``folder`` holds one ``<SOPInstanceUID>.dcm`` per instance."""

    study_instance_uid: str
    folder: Path
    files: int
    bytes: int
    expected: int | None
    seconds: float


class AssociationRetriever:
    """C-GET or C-MOVE of whole studies in this process, on at most ``max_associations``
    reused associations (threads). ``Retriever`` puts one of these in each worker process."""

    def __init__(self, settings: Settings, *, keep_idle: bool = True) -> None:
        self.settings = settings
        #: False when the associations are counted team-wide (``load/claims.py``): none stays
        #: open between studies, so this process holds only what its retrievals use
        self.keep_idle = keep_idle
        self.method = settings.pacs.retrieve
        if self.method == "c-move" and not settings.pacs.move_destination:
            raise ConfigError(
                "[pacs] retrieve = 'c-move' needs move_destination: our AE title as the PACS "
                "knows it (the PACS sends the study to that AE, at our receive_port)"
            )
        self._slots = threading.BoundedSemaphore(settings.pacs.max_associations)
        self._idle: list[Association] = []
        self._lock = threading.Lock()
        self._sinks: dict[int, StudySink] = {}  # C-GET: id(association) -> its current study
        self._receiver: MoveReceiver | None = None
        self._closed = False
        self._dcmtk = DcmtkBackend(settings) if settings.pacs.retrieve_backend == "dcmtk" else None

    # -- context manager -------------------------------------------------------------------

    def __enter__(self) -> AssociationRetriever:
        if self.method == "c-move" and self._dcmtk is None:
            self._receiver = MoveReceiver(self.settings)
            self._receiver.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release every idle association and stop our storage SCP."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for assoc in idle:
            _release(assoc)
        if self._receiver is not None:
            self._receiver.stop()
            self._receiver = None

    # -- the API ---------------------------------------------------------------------------

    def retrieve(
        self, study_instance_uid: str, dest: Path, expected: int | None = None
    ) -> RetrievedStudy:
        """Retrieve one study into ``dest`` (created owner-only); see the module docstring."""
        uid = study_instance_uid.strip()
        dest = Path(dest)
        dest.mkdir(mode=0o700, parents=True, exist_ok=True)
        started = time.monotonic()
        sink = StudySink(uid, dest)
        with self._slots:
            if self._dcmtk is not None:
                outcome, ok = self._run_dcmtk(sink, expected)
            else:
                outcome, ok = self._run_pynetdicom(sink, expected)
        seconds = time.monotonic() - started
        self._judge(sink, outcome, expected, lost=not ok)
        logger.info(
            "retrieved %s: %d files, %.1f MB in %.1f s", uid, sink.files, sink.bytes / 1e6, seconds
        )
        return RetrievedStudy(uid, dest, sink.files, sink.bytes, expected, seconds)

    def _run_pynetdicom(self, sink: StudySink, expected: int | None) -> tuple[SubOperations, bool]:
        assoc = self._checkout()
        ok = False
        try:
            with fast_reactor(assoc):
                if self.method == "c-get":
                    outcome = self._c_get(assoc, sink)
                else:
                    outcome = self._c_move(assoc, sink)
            ok = assoc.is_established and outcome.final_status is not None
            if sink.files == 0 and ok and not sink.disk_full:
                self._raise_nothing_found(assoc, sink.study_instance_uid, expected)
        finally:
            self._checkin(assoc, healthy=ok)
        return outcome, ok

    def _run_dcmtk(self, sink: StudySink, expected: int | None) -> tuple[SubOperations, bool]:
        assert self._dcmtk is not None
        status, (remaining, completed, failed, warning), _tail = self._dcmtk.run(sink)
        total = remaining + completed + failed + warning
        outcome = SubOperations(status, completed, failed, warning, total or None)
        ok = status is not None
        if sink.files == 0 and ok and not sink.disk_full:
            assoc = self._open(find_only=True)
            try:
                self._raise_nothing_found(assoc, sink.study_instance_uid, expected)
            finally:
                _release(assoc)
        return outcome, ok

    # -- associations ----------------------------------------------------------------------

    def _checkout(self) -> Association:
        with self._lock:
            if self._closed:
                raise RuntimeError("AssociationRetriever used after close()")
            while self._idle:
                assoc = self._idle.pop()
                if assoc.is_established:
                    return assoc
        return self._open()

    def _checkin(self, assoc: Association, *, healthy: bool) -> None:
        self._sinks.pop(id(assoc), None)
        if healthy and assoc.is_established:
            with self._lock:
                if not self._closed and self.keep_idle:
                    self._idle.append(assoc)
                    return
            _release(assoc)
        else:
            _abort(assoc)

    def _open(self, *, find_only: bool = False) -> Association:
        ae = make_ae(self.settings)
        ae.maximum_pdu_size = 0  # no limit: the PACS sends its largest PDUs
        handlers: list[Any] = []
        ext_neg: list[Any] = []
        if find_only:
            pass
        elif self.method == "c-get":
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
            for cx in get_storage_contexts():
                ae.add_requested_context(abstract_syntax(cx), cx.transfer_syntax)
                ext_neg.append(build_role(abstract_syntax(cx), scp_role=True))
            handlers.append((evt.EVT_C_STORE, self._on_c_store))
        else:
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        return open_association(self.settings, ae, ext_neg=ext_neg, evt_handlers=handlers)

    # -- C-GET -----------------------------------------------------------------------------

    def _on_c_store(self, event: evt.Event) -> int:
        """C-STORE sub-operation of our C-GET: write to the association's current study."""
        sink = self._sinks.get(id(event.assoc))
        got = encoded_instance(event)
        if sink is None or got is None:
            return 0xC210
        return sink.write(*got)

    def _c_get(self, assoc: Association, sink: StudySink) -> SubOperations:
        self._sinks[id(assoc)] = sink
        responses = assoc.send_c_get(identifier(sink.study_instance_uid), _GET_MODEL)
        return consume(responses)

    # -- C-MOVE ----------------------------------------------------------------------------

    def _c_move(self, assoc: Association, sink: StudySink) -> SubOperations:
        assert self._receiver is not None, "use AssociationRetriever as a context manager"
        with self._receiver.expecting(sink):
            responses = assoc.send_c_move(
                identifier(sink.study_instance_uid),
                self.settings.pacs.move_destination,
                _MOVE_MODEL,
            )
            return consume(responses)

    # -- judging ---------------------------------------------------------------------------

    def _raise_nothing_found(self, assoc: Association, uid: str, expected: int | None) -> None:
        """Nothing came: ask the PACS whether the study exists (C-FIND) to name the failure."""
        if expected == 0:
            raise StudyFailed("no_images_on_pacs", f"study {uid}: the PACS holds no images")
        found = find_study(assoc, uid)
        if found is None:
            raise StudyFailed(
                "not_found_on_pacs",
                f"study {uid} is not on the PACS",
                files_expected=expected,
                files_received=0,
            )
        n = found.get("NumberOfStudyRelatedInstances")
        if n in (None, "", 0, "0"):
            raise StudyFailed(
                "no_images_on_pacs",
                f"study {uid}: the PACS lists it with no images",
                files_expected=expected,
                files_received=0,
            )

    def _judge(
        self,
        sink: StudySink,
        outcome: SubOperations,
        expected: int | None,
        *,
        lost: bool,
    ) -> None:
        uid = sink.study_instance_uid
        counts = f"{sink.files} of {_n(expected or outcome.total)} files received"
        kw: dict[str, Any] = {"files_expected": expected, "files_received": sink.files}
        if sink.disk_full:
            raise StudyFailed(
                "disk_full",
                f"study {uid}: disk full in {sink.folder} ({sink.last_error}); {counts}",
                **kw,
            )
        if lost:
            silent = time.monotonic() - sink.last_activity  # pynetdicom aborts on DIMSE timeout
            timed_out = silent >= 0.9 * self.settings.pacs.dimse_timeout
            raise StudyFailed(
                "timeout" if timed_out else "retrieve_failed",
                f"study {uid}: the association was lost during the transfer; {counts}",
                **kw,
            )
        status = outcome.final_status
        if status not in (0x0000, WARNING_SUBOPS):
            hint = ""
            if self.method == "c-move" and sink.files == 0:  # Orthanc: 0xC000, others: 0xA801
                hint = (
                    f" (does it know our move_destination {self.settings.pacs.move_destination!r}"
                    f" at port {self.settings.pacs.receive_port}?)"
                )
            raise StudyFailed(
                "retrieve_failed",
                f"study {uid}: the PACS answered with status 0x{status or 0:04X}{hint}; {counts}",
                **kw,
            )
        missing = outcome.failed + outcome.warning
        short_of_expected = expected is not None and sink.files < expected
        short_of_pacs = outcome.total is not None and sink.files < outcome.total
        if missing or short_of_expected or short_of_pacs or sink.errors:
            detail = f"{outcome.failed} sub-operations failed" if outcome.failed else ""
            raise StudyFailed(
                "retrieve_incomplete",
                f"study {uid}: {counts}" + (f" ({detail})" if detail else ""),
                **kw,
            )


_GET_MODEL = StudyRootQueryRetrieveInformationModelGet
_MOVE_MODEL = StudyRootQueryRetrieveInformationModelMove


def _n(x: int | None) -> str:
    return "?" if x is None else str(x)


def _release(assoc: Association) -> None:
    try:
        assoc.release()
    except Exception as e:  # releasing a dead association: nothing left to do
        logger.debug("release failed: %s", e)


def _abort(assoc: Association) -> None:
    try:
        assoc.abort()
    except Exception as e:  # aborting a dead association: nothing left to do
        logger.debug("abort failed: %s", e)
