"""Our storage SCP for C-MOVE: started once per ``Retriever``, shared by its associations.

The PACS opens its own association to ``receive_port`` for every C-MOVE and sends the
instances there. Each one is routed to the folder of the study being retrieved by its Study
Instance UID (read from the encoded dataset without decoding the pixel data), since several
studies may be moving at once.

With ``registry`` (a folder), several worker processes each run one on the same port
(``SO_REUSEPORT``: the kernel spreads the PACS's associations among them), so the receiving is
not bound to one GIL. An association may then land in another worker than the one that asked
for the study: each study being moved has a symlink ``registry/<Study UID>`` to its folder, and
a receiver writes an instance of a study it is not moving itself into that folder. The asking
worker counts its folder once the C-MOVE has ended (``StudySink.rescan``). A SOP class outside
pynetdicom's list that a worker accepts for its study is named in ``registry/.classes/`` so
that every worker's SCP accepts it before the next association is negotiated.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pynetdicom import build_context, evt
from pynetdicom.transport import ThreadedAssociationServer

from connectors.config import Settings
from connectors.errors import ConfigError
from connectors.pacs.net import make_ae
from connectors.pacs.retrieve.pace import ACCEPTOR_HANDLERS
from connectors.pacs.storage import (
    STATUS_CANNOT_UNDERSTAND,
    STATUS_UNEXPECTED_STUDY,
    StudySink,
    abstract_syntax,
    encoded_instance,
    register_storage_class,
    scp_storage_contexts,
    study_uid_of,
)

logger = logging.getLogger(__name__)
_UID = re.compile(r"^[0-9][0-9.]{0,63}$")
_CLASSES = ".classes"  # in the registry: SOP classes outside pynetdicom's list being moved


class SharedContexts(list):  # type: ignore[type-arg]
    """The storage SCP's supported contexts, shared by its associations instead of deep-copied
    for each one: 170 SOP classes x every transfer syntax took ~0.5 s to copy per incoming
    association, i.e. per C-MOVE (measured; the contexts are only read in negotiation)."""

    def __deepcopy__(self, memo: dict[int, object]) -> list[object]:
        return list(self)


class MoveServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, made with ``AE.make_server`` so that its contexts are
    ``SharedContexts`` before it serves."""

    def shutdown(self) -> None:
        """Stop serving and close the socket (made by ``AE.make_server``, so not in the AE's
        own list of servers, which pynetdicom's ``shutdown`` removes it from)."""
        socketserver.BaseServer.shutdown(self)
        self.server_close()


class ReusePortServer(MoveServer):
    """With ``SO_REUSEPORT``: one listener per worker process on the same port; ``before_each``
    runs as each association comes in, before it is negotiated."""

    before_each: Callable[[], None] | None = None

    def server_bind(self) -> None:
        if self.socket is not None:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def process_request(self, request: Any, client_address: Any) -> None:
        if self.before_each is not None:
            self.before_each()
        super().process_request(request, client_address)


class MoveReceiver:
    """A storage SCP on ``[pacs] receive_port`` that writes each study to its own folder."""

    def __init__(self, settings: Settings, host: str = "", registry: Path | None = None) -> None:
        self.settings = settings
        self.host = host
        self.registry = registry
        self._sinks: dict[str, StudySink] = {}
        self._lock = threading.Lock()
        self._server: MoveServer | None = None
        self._syntaxes: list[str] = []

    def start(self) -> None:
        ae = make_ae(self.settings)
        ae.maximum_pdu_size = 0
        ae.ae_title = self.settings.pacs.move_destination or self.settings.pacs.calling_aet
        ae.require_called_aet = False
        for cx in scp_storage_contexts():
            ae.add_supported_context(abstract_syntax(cx), cx.transfer_syntax)
            self._syntaxes = list(cx.transfer_syntax)
        port = self.settings.pacs.receive_port
        handlers = [*ACCEPTOR_HANDLERS, (evt.EVT_C_STORE, self._on)]
        if self.registry is not None:
            self.registry.mkdir(mode=0o700, parents=True, exist_ok=True)
        kind = MoveServer if self.registry is None else ReusePortServer
        try:
            server = ae.make_server((self.host, port), evt_handlers=handlers, server_class=kind)
        except OSError as e:
            raise ConfigError(
                f"[pacs] receive_port {port}: cannot listen there for C-MOVE ({e.strerror})"
            ) from None
        server.contexts = SharedContexts(server.contexts)
        if isinstance(server, ReusePortServer):  # another worker may have asked for a class
            server.before_each = self._classes_of_other_workers
        threading.Thread(target=server.serve_forever, daemon=True, name="move-scp").start()
        self._server = server  # type: ignore[assignment]  # make_server built a MoveServer
        logger.debug("storage SCP listening on port %d", port)

    def accept_classes(self, sop_classes: set[str]) -> None:
        """Accept these SOP classes too (every transfer syntax): a study may hold a storage
        class pynetdicom does not list; the PACS proposes it, we take it as is. The server
        copies its contexts into each new association, so this applies to the next one."""
        if self._server is None:
            return
        with self._lock:
            known = {str(cx.abstract_syntax) for cx in self._server.contexts}
            for sop in sorted(sop_classes - known):
                logger.info("accepting SOP class %s, outside pynetdicom's list", sop)
                register_storage_class(sop)
                self._server.contexts.append(build_context(sop, self._syntaxes))
                if self.registry is not None:  # the PACS may send it to another worker's SCP
                    (self.registry / _CLASSES).mkdir(mode=0o700, exist_ok=True)
                    (self.registry / _CLASSES / sop).touch()

    def _classes_of_other_workers(self) -> None:
        """The classes another worker's study holds (``registry/.classes/<UID>``), accepted
        here too before the PACS's association is negotiated."""
        assert self.registry is not None
        try:
            named = {f.name for f in (self.registry / _CLASSES).iterdir() if _UID.match(f.name)}
        except FileNotFoundError:
            return
        self.accept_classes(named)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @contextlib.contextmanager
    def expecting(self, sink: StudySink) -> Iterator[None]:
        """Route the instances of ``sink``'s study to it while the C-MOVE runs."""
        uid = sink.study_instance_uid
        with self._lock:
            if uid in self._sinks:
                raise RuntimeError(f"study {uid} is already being retrieved")
            self._sinks[uid] = sink
        link = None if self.registry is None else self.registry / uid
        if link is not None:
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            link.symlink_to(sink.folder.resolve())
        try:
            yield
        finally:
            if link is not None:
                with contextlib.suppress(OSError):
                    link.unlink()
            with self._lock:
                self._sinks.pop(uid, None)

    def _on(self, event: evt.Event) -> int:
        """C-STORE handler: never raises, answers with a DICOM status."""
        got = encoded_instance(event)
        if got is None:
            return STATUS_CANNOT_UNDERSTAND
        sop_uid, data, syntax = got
        study = study_uid_of(data)
        if study is None:
            return STATUS_CANNOT_UNDERSTAND
        with self._lock:
            sink = self._sinks.get(study)
        if sink is None and self.registry is not None and _UID.match(study):
            with contextlib.suppress(OSError):  # another worker's study: into its folder
                sink = StudySink(study, Path(os.readlink(self.registry / study)))
                logger.debug("an instance for another worker's study, written to its folder")
        if sink is None:
            logger.warning("refused an instance of a study we are not retrieving")
            return STATUS_UNEXPECTED_STUDY
        return sink.write(sop_uid, data, syntax)
