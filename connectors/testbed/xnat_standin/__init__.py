"""A stand-in XNAT for tests and ``pacs2xnat demo``: the endpoints of
``xnat-rest-contract.md``, served over a real socket on a loopback port.

    with StandinXnat(users={"admin": "secret"}, projects=["HNC"]) as x:
        x.url            # http://127.0.0.1:PORT
        x.faults.fail_next(503, count=2, path="/data/services/import")
        x.store          # what it holds (sessions, subjects, prearchive, DQR requests)

The real ``xnat`` client (xnatpy) connects, lists and imports against it. Faults are switched on
per test through ``faults`` (500/503, slow answers, 401 after N requests, a DQR request stuck in
ISSUED, a session archived with fewer files than sent) and ``stop()`` refuses connections.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from connectors.testbed.xnat_standin.app import XnatApp
from connectors.testbed.xnat_standin.web import Faults

logger = logging.getLogger(__name__)


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64


class _QuietHandler(WSGIRequestHandler):
    def setup(self) -> None:
        super().setup()
        # As Tomcat does (tcpNoDelay): without it wsgiref's separate header and body writes
        # wait for the client's delayed ACK, ~40 ms per answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("stand-in XNAT: " + format, *args)


class StandinXnat:
    """The stand-in server. ``pacs`` entries are what ``GET /xapi/pacs`` lists (DQR)."""

    def __init__(
        self,
        users: dict[str, str] | None = None,
        projects: list[str] | tuple[str, ...] = ("HNC",),
        pacs: list[dict[str, Any]] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        archive_seconds_per_file: float | None = None,
        version: str = "1.8.10",
    ) -> None:
        self.app = XnatApp(users or {"admin": "admin"}, projects, pacs, version=version)
        if archive_seconds_per_file is not None:
            self.app.archive.seconds_per_file = archive_seconds_per_file
        self.host = host
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else self._port

    @property
    def faults(self) -> Faults:
        return self.app.faults

    @property
    def store(self) -> Any:
        return self.app.store

    def start(self) -> StandinXnat:
        self._server = make_server(
            self.host, self._port, self.app, server_class=_Server, handler_class=_QuietHandler
        )
        self._port = self._server.server_address[1]  # a restart keeps the same port
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="standin-xnat", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the socket: clients now get "connection refused". ``start()`` reopens it."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def close(self) -> None:
        self.stop()
        self.app.dqr.stop()

    def __enter__(self) -> StandinXnat:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Faults", "StandinXnat", "XnatApp"]
