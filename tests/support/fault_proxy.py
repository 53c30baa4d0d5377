"""A TCP proxy in front of the real PACS, for faults the PACS itself cannot be asked for: it
relays bytes both ways over real sockets, and can slow the PACS's answers down (``delay``
seconds per relayed chunk), hold them (``paused``; ``held`` counts the answers waiting), cut the
first connection after the PACS sent ``cut_after`` bytes (an association dropped in the middle
of a C-GET, with a TCP reset), or ``drop()`` every open connection (a PACS that closes while we
wait for its answer), or reset the next ``abort_next`` connections once their first bytes (the
association request) have come, unanswered (a busy PACS dropping association requests)."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time


class FaultProxy:
    def __init__(self, target_host: str, target_port: int, *, pacs_connects: bool = False) -> None:
        """``pacs_connects``: the proxy stands in front of our storage SCP, which the PACS calls
        (C-MOVE), so the PACS's side is the one that connects to the proxy."""
        self.target = (target_host, target_port)
        self.pacs_connects = pacs_connects
        self.delay = 0.0
        # While set, the PACS's answers wait in the proxy: a PACS slowed to a stop, for as long
        # as a test needs a load in progress (the loader's timeouts must be longer).
        self.paused = threading.Event()
        self.cut_after: int | None = None  # one-shot: the first connection to pass it dies
        self.cuts = 0
        self.abort_next = 0  # reset this many of the next connections, their request unanswered
        self.aborted = 0
        self.held = 0  # answers from the PACS waiting in the proxy right now (while paused)
        self.connections = 0
        self.most_open = 0  # the most connections ever open at once (see _accept)
        self._clients: set[socket.socket] = set()  # each open connection's connecting side
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = "127.0.0.1", int(self._listener.getsockname()[1])
        self.aet = "ORTHANC"
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, name="fault-proxy", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.abort_next > 0:  # the request read, then the connection dropped unanswered
                self.abort_next -= 1
                self.aborted += 1
                client.settimeout(5)
                with contextlib.suppress(OSError):
                    client.recv(65536)
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)  # the PACS is down: refuse as it would
                continue
            with self._lock:
                self.connections += 1
                # A connection whose connecting side has closed is not open, even if its pipe
                # thread has not run yet to say so: a loader that releases one association and
                # opens the next at once would otherwise be counted with both open.
                self._clients = {c for c in self._clients if _still_open(c)} | {client}
                self.most_open = max(self.most_open, len(self._clients))
                self._socks += [client, upstream]
            pc = self.pacs_connects
            threading.Thread(target=self._pipe, args=(client, upstream, pc), daemon=True).start()
            threading.Thread(
                target=self._pipe, args=(upstream, client, not pc), daemon=True
            ).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, from_pacs: bool) -> None:
        sent = 0
        try:
            while True:
                data = src.recv(4096)
                if not data:
                    break
                if from_pacs:
                    if self.paused.is_set():
                        with self._lock:
                            self.held += 1
                        while self.paused.is_set() and not self._closed:
                            time.sleep(0.05)
                        with self._lock:
                            self.held -= 1
                    if self.delay:
                        time.sleep(self.delay)
                    sent += len(data)
                    with self._lock:
                        cut = self.cut_after is not None and sent > self.cut_after
                        if cut:
                            self.cut_after = None
                            self.cuts += 1
                    if cut:
                        _reset(src)
                        _reset(dst)
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
            if from_pacs == self.pacs_connects:  # the connecting side ended it
                with self._lock:
                    self._clients.discard(src)

    @property
    def open_now(self) -> int:
        """Connections open right now."""
        with self._lock:
            return len(self._clients)

    def drop(self) -> None:
        """Reset every connection open now, both ways (the held answers are never sent)."""
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)  # wakes the pipe thread blocked on it
            with contextlib.suppress(OSError):
                s.close()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            for s in self._socks:
                with contextlib.suppress(OSError):
                    s.close()


def _reset(s: socket.socket) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a crashed peer's kernel does."""
    with contextlib.suppress(OSError):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        s.close()


def _still_open(sock: socket.socket) -> bool:
    """Whether the peer has not closed ``sock``: a FIN or a reset waiting unread says it has."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:  # nothing to read: still open
        return True
    except OSError:  # reset, or closed here
        return False
