"""One process's retrieval: C-GET or C-MOVE of whole studies on reused associations.

Each instance is written to ``dest/<SOPInstanceUID>.dcm`` as it arrives, as received (no decode,
one instance in memory at a time; ``connectors/pacs/storage.py``). The count is checked against
``expected`` (the PACS's Number of Study Related Instances) and against the PACS's own sub-
operation counts. Failures are ``StudyFailed`` with a reason category from
``seeds/failure_reasons.csv``; no association at all is ``PacsUnreachable`` (exit 3).

Speed (benchmarks/load): TCP_NODELAY and reactors that wake on events instead of polling
(``net.py``, ``pace.py``) more than double pynetdicom's throughput; the dcmtk back end
(``dcmtk.py``) reaches getscu's.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
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
from connectors.pacs.net import abort_quietly, make_ae, open_association, release_quietly
from connectors.pacs.retrieve.dcmtk import DcmtkBackend
from connectors.pacs.retrieve.dimse import (
    SubOperations,
    consume,
    identifier,
    merge,
    series_identifier,
)
from connectors.pacs.retrieve.holdings import ContextGroup, StudyHoldings, learn, plan
from connectors.pacs.retrieve.judge import judge, raise_nothing_found
from connectors.pacs.retrieve.pace import fast_reactor
from connectors.pacs.retrieve.resume import (
    Canceller,
    RetrievalPaused,
    held_in,
    remaining_identifiers,
    send_each,
)
from connectors.pacs.storage import StudySink, encoded_instance, register_storage_class
from connectors.pacs.storage_scp import MoveReceiver

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrievedStudy:
    """One study on disk: ``folder`` holds one ``<SOPInstanceUID>.dcm`` per instance."""

    study_instance_uid: str
    folder: Path
    files: int
    bytes: int
    expected: int | None
    seconds: float
    #: instances received in the transfer syntax the PACS said it stores / in another one
    #: (None: the PACS did not say what it stores), and of those converted, to a lossy one
    as_stored: int | None = None
    converted: int | None = None
    lossy_converted: int | None = None


def check_move_destination(settings: Settings) -> None:
    if settings.pacs.retrieve == "c-move" and not settings.pacs.move_destination:
        raise ConfigError(
            "[pacs] retrieve = 'c-move' needs move_destination: our AE title as the PACS "
            "knows it (the PACS sends the study to that AE, at our receive_port)"
        )


class AssociationRetriever:
    """C-GET or C-MOVE of whole studies in this process, on at most ``max_associations``
    reused associations (threads). ``Retriever`` puts one of these in each worker process."""

    def __init__(
        self, settings: Settings, registry: Path | None = None, *, keep_idle: bool = True
    ) -> None:
        self.settings = settings
        self._registry = registry  # C-MOVE receivers in several processes (storage_scp.py)
        #: False when the associations are counted team-wide (``load/claims.py``): none stays
        #: open between studies, so this process holds only what its retrievals use
        self.keep_idle = keep_idle
        self.method = settings.pacs.retrieve
        check_move_destination(settings)
        self._slots = threading.BoundedSemaphore(settings.pacs.max_associations)
        self._idle: list[tuple[ContextGroup | None, Association]] = []
        self._lock = threading.Lock()
        self._sinks: dict[int, StudySink] = {}  # C-GET: id(association) -> its current study
        self._receiver: MoveReceiver | None = None
        self._closed = False
        self._dcmtk = DcmtkBackend(settings) if settings.pacs.retrieve_backend == "dcmtk" else None
        self._groups: dict[int, ContextGroup | None] = {}  # id(association) -> its contexts
        self._max_idle = settings.pacs.max_associations

    # -- context manager -------------------------------------------------------------------

    def __enter__(self) -> AssociationRetriever:
        if self.method == "c-move" and self._dcmtk is None:
            self._receiver = MoveReceiver(self.settings, registry=self._registry)
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
        for _group, assoc in idle:
            release_quietly(assoc)
        if self._receiver is not None:
            self._receiver.stop()
            self._receiver = None
        if self._dcmtk is not None:
            self._dcmtk.close()

    # -- the API ---------------------------------------------------------------------------

    def retrieve(
        self,
        study_instance_uid: str,
        dest: Path,
        expected: int | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> RetrievedStudy:
        """Retrieve one study into ``dest`` (created owner-only); see the module docstring.
        C-GET and C-MOVE: ``stop`` (a window's end) is asked after each sub-operation (dcmtk's
        getscu: every ``dcmtk.POLL`` s) and ends the retrieval (``RetrievalPaused``); called
        again on the same folder it asks only for what is missing (``resume.py``)."""
        uid = study_instance_uid.strip()
        dest = Path(dest)
        dest.mkdir(mode=0o700, parents=True, exist_ok=True)
        started = time.monotonic()
        sink = StudySink(uid, dest)
        cancel = Canceller(stop)
        kept = held_in(dest)
        if kept:  # a paused study's instances count as received (their syntax too)
            sink.rescan()
        with self._slots:
            if self._dcmtk is not None:
                outcome, ok = self._run_dcmtk(sink, expected, cancel, kept)
            elif self.method == "c-get":
                outcome, ok = self._c_get_study(sink, expected, cancel, kept)
            else:
                outcome, ok = self._c_move_study(sink, expected, cancel, kept)
        seconds = time.monotonic() - started
        if cancel.cancelled and not sink.disk_full:  # each file that arrived is whole
            raise RetrievalPaused(uid, dest, len(held_in(dest)))
        judge(self.settings, sink, outcome, expected, lost=not ok)
        logger.info(
            "retrieved %s: %d files (%d kept from before a pause), %.1f MB in %.1f s",
            uid, sink.files, len(kept), sink.bytes / 1e6, seconds,
        )  # fmt: skip
        return RetrievedStudy(
            uid, dest, sink.files, sink.bytes, expected, seconds, *sink.conversions()
        )

    def _c_move_study(
        self,
        sink: StudySink,
        expected: int | None,
        cancel: Canceller | None = None,
        kept: set[str] | None = None,
    ) -> tuple[SubOperations, bool]:
        """C-MOVE the study to our storage SCP (its classes learnt first, for the SCP); with
        ``kept`` (a paused study's files) only what is not in the folder yet."""
        assoc = self._checkout(None)
        ok = False
        outcomes: list[SubOperations] = []
        try:
            held = learn(assoc, sink.study_instance_uid)
            sink.stored = held.instance_syntax
            assert self._receiver is not None, "use AssociationRetriever as a context manager"
            if held.source in ("study", "series", "image"):
                self._receiver.accept_classes(held.sop_classes)
            uid = sink.study_instance_uid
            ids = remaining_identifiers(assoc, uid, kept) if kept else [identifier(uid)]
            move = functools.partial(self._c_move, assoc, cancel=cancel)
            # The instances come on the PACS's own association to our SCP (pace.fast_acceptor);
            # this one only brings C-MOVE responses.
            with self._receiver.expecting(sink):
                if not send_each(assoc, ids, move, outcomes, cancel):
                    return merge(outcomes), False
            if self._registry is not None:  # other workers may have received some of it
                sink.rescan()
            ok = assoc.is_established and merge(outcomes).final_status is not None
            if sink.files == 0 and ok and not sink.disk_full:
                raise_nothing_found(assoc, sink.study_instance_uid, expected)
        finally:
            self._checkin(assoc, healthy=ok)
        return merge(outcomes), ok

    def _run_dcmtk(
        self, sink: StudySink, expected: int | None, cancel: Canceller, kept: set[str]
    ) -> tuple[SubOperations, bool]:
        assert self._dcmtk is not None
        outcome = self._dcmtk.run(sink, cancel, kept, lambda: self._open(find_only=True))
        ok = outcome.final_status is not None
        if sink.files == 0 and ok and not sink.disk_full:
            assoc = self._open(find_only=True)
            try:
                raise_nothing_found(assoc, sink.study_instance_uid, expected)
            finally:
                release_quietly(assoc)
        return outcome, ok

    # -- associations ----------------------------------------------------------------------

    def _checkout_idle(self) -> Association | None:
        """Any idle association (to ask what a study holds on it), or None."""
        with self._lock:
            while self._idle:
                g, assoc = self._idle.pop()
                if assoc.is_established:
                    self._groups[id(assoc)] = g
                    return assoc
        return None

    def _checkout(self, group: ContextGroup | None) -> Association:
        """An idle association with ``group``'s storage contexts, else a new one."""
        with self._lock:
            if self._closed:
                raise RuntimeError("AssociationRetriever used after close()")
            for i in range(len(self._idle) - 1, -1, -1):
                g, assoc = self._idle[i]
                if g == group:
                    del self._idle[i]
                    if assoc.is_established:
                        self._groups[id(assoc)] = g
                        return assoc
        assoc = self._open(group=group)
        self._groups[id(assoc)] = group
        return assoc

    def _checkin(self, assoc: Association, *, healthy: bool) -> None:
        self._sinks.pop(id(assoc), None)
        group = self._groups.pop(id(assoc), None)
        if healthy and assoc.is_established:
            with self._lock:
                if not self._closed and self.keep_idle:
                    self._idle.append((group, assoc))
                    surplus = self._idle[: max(0, len(self._idle) - self._max_idle)]
                    del self._idle[: len(surplus)]
                    assoc = None  # type: ignore[assignment]
                else:
                    surplus = []
            for _g, old in surplus:
                release_quietly(old)
            if assoc is not None:
                release_quietly(assoc)
        else:
            abort_quietly(assoc)

    def _open(self, *, find_only: bool = False, group: ContextGroup | None = None) -> Association:
        ae = make_ae(self.settings)
        ae.maximum_pdu_size = 0  # no limit: the PACS sends its largest PDUs
        handlers: list[Any] = []
        ext_neg: list[Any] = []
        if find_only:
            pass
        elif self.method == "c-get":
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
            group = group or plan(StudyHoldings())[0]
            for cx in group.presentation_contexts():
                ae.add_requested_context(str(cx.abstract_syntax), cx.transfer_syntax)
            for sop in group.sop_classes:  # SCP/SCU role selection: once per SOP class
                ext_neg.append(build_role(sop, scp_role=True))
            handlers.append((evt.EVT_C_STORE, self._on_c_store))
        else:
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = open_association(self.settings, ae, ext_neg=ext_neg, evt_handlers=handlers)
        model = _GET_MODEL if self.method == "c-get" else _MOVE_MODEL
        if not find_only and not any(cx.abstract_syntax == model for cx in assoc.accepted_contexts):
            release_quietly(assoc)
            raise ConfigError(
                f"[pacs] retrieve = {self.method!r}: the PACS accepted the association but not "
                f"the Study Root {self.method.upper()} model"
                + (
                    ": it does not offer C-GET to us; set [pacs] retrieve = 'c-move' with a "
                    "move_destination (our AE title as the PACS knows it)"
                    if self.method == "c-get"
                    else ""
                )
            )
        return assoc

    # -- C-GET -----------------------------------------------------------------------------

    def _on_c_store(self, event: evt.Event) -> int:
        """C-STORE sub-operation of our C-GET: write to the association's current study."""
        sink = self._sinks.get(id(event.assoc))
        got = encoded_instance(event)
        if sink is None or got is None:
            return 0xC210
        return sink.write(*got)

    def _c_get_study(
        self,
        sink: StudySink,
        expected: int | None,
        cancel: Canceller | None = None,
        kept: set[str] | None = None,
    ) -> tuple[SubOperations, bool]:
        """Learn what the study holds, then C-GET it on associations whose storage contexts let
        the PACS send each instance as stored (``holdings.py``), series by series if split;
        with ``kept`` (a paused study's files) only what is not in the folder yet."""
        assoc = self._checkout_idle()
        held = None
        if assoc is not None:
            try:
                held = learn(assoc, sink.study_instance_uid)
            except StudyFailed:  # the PACS closed the idle association just now: a new one
                self._checkin(assoc, healthy=False)
                assoc = None
        if held is None:  # none open: ask on a Find-only association, then open the right one
            asker = self._open(find_only=True)
            try:
                held = learn(asker, sink.study_instance_uid)
            finally:
                release_quietly(asker)
        groups = plan(held)
        if assoc is None:
            assoc = self._checkout(groups[0])
        for sop in held.sop_classes:  # a class pynetdicom does not list: take it as is
            register_storage_class(sop)
        sink.stored = held.instance_syntax
        ok = False
        outcomes: list[SubOperations] = []
        outcome = SubOperations()
        try:
            logger.debug("study %s: %s (%s), %d association(s)", sink.study_instance_uid,
                         held.sop_classes, held.source, len(groups))  # fmt: skip
            for group in groups:
                if self._groups.get(id(assoc)) != group:
                    self._checkin(assoc, healthy=True)
                    assoc = self._checkout(group)
                uid = sink.study_instance_uid
                ids = [series_identifier(uid, s) for s in group.series or ()] or [identifier(uid)]
                if kept:  # a paused study continued: only what has not arrived
                    ids = remaining_identifiers(assoc, uid, kept, group.series)
                with fast_reactor(assoc):
                    get = functools.partial(self._c_get, assoc, sink, cancel=cancel)
                    if not send_each(assoc, ids, get, outcomes, cancel):
                        return merge(outcomes), False
            outcome = merge(outcomes)
            ok = assoc.is_established and outcome.final_status is not None
            if sink.files == 0 and ok and not sink.disk_full:
                raise_nothing_found(assoc, sink.study_instance_uid, expected)
        finally:
            self._checkin(assoc, healthy=ok)
        return outcome, ok

    def _c_get(
        self, assoc: Association, sink: StudySink, ident: Any, cancel: Canceller | None = None
    ) -> SubOperations:
        self._sinks[id(assoc)] = sink
        responses = assoc.send_c_get(ident, _GET_MODEL, msg_id=1)
        if cancel is not None and cancel.stop is not None:
            responses = cancel.watch(assoc, responses, _GET_MODEL, 1)
        return consume(responses)

    # -- C-MOVE ----------------------------------------------------------------------------

    def _c_move(
        self, assoc: Association, ident: Any, cancel: Canceller | None = None
    ) -> SubOperations:
        move = self.settings.pacs.move_destination
        responses = assoc.send_c_move(ident, move, _MOVE_MODEL, msg_id=1)
        if cancel is not None and cancel.stop is not None:
            responses = cancel.watch(assoc, responses, _MOVE_MODEL, 1)
        return consume(responses)


_GET_MODEL = StudyRootQueryRetrieveInformationModelGet
_MOVE_MODEL = StudyRootQueryRetrieveInformationModelMove
