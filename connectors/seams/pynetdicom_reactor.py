"""pynetdicom's reactors poll, and every DICOM round trip meets their sleeps.

- The DUL reactor (``DULServiceProvider.run_reactor``, one thread an association) sleeps
  ``_run_loop_delay`` (1 ms) whenever it finds nothing to do, then looks at its provider queue
  (what to send) and its socket (what came).
- An acceptor's association thread (``Association._run_reactor``) sleeps 1 ms between looks at
  its DIMSE queue (a C-STORE our storage SCP must answer).

``wake_on_events(assoc)`` makes both wait for what they are waiting for instead. The DUL
reactor waits in ``select`` on its socket and on a socket pair that every primitive put on its
provider queue writes to; the acceptor's thread waits on its DIMSE queue's condition. Both still
wake at their old pace at the latest, so pynetdicom's timers (ARTIM, idle) run as before. No
thread spins: the cores stay with the PACS and the other workers (benchmarks/load).

How: ``pynetdicom.dul`` and ``pynetdicom.association`` call ``time.sleep`` through their
module's ``time``. The seam gives those two modules a ``time`` whose ``sleep`` looks at the
calling thread (a ``DULServiceProvider`` or an ``Association`` is a ``threading.Thread``) and
waits for events only for one that ``wake_on_events`` marked; any other caller, and any sleep
longer than the reactors' 1 ms (pynetdicom's shutdown pauses), sleeps as before.
``set_reactor_delay`` (a spinning pace) is the fallback should an upgrade change any of it.
tests/seams/test_seams.py breaks on such an upgrade.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import socket
import ssl
import threading
import time
import types
import weakref
from typing import Any

import pynetdicom.association
import pynetdicom.dul

logger = logging.getLogger(__name__)

ATTRIBUTE = "_run_loop_delay"
WAKER = "_pacs2xnat_waker"  # on a DULServiceProvider: its _Waker
QUEUE_WAIT = "_pacs2xnat_queue_wait"  # on an acceptor Association: wait on its DIMSE queue
REACTOR_POLL = 0.001  # the longest sleep of either reactor's loop (pynetdicom's 1 ms)
_warned: set[str] = set()


def _warn_once(what: str) -> None:
    if what not in _warned:
        _warned.add(what)
        logger.warning("pynetdicom %s: its reactors keep their own pace", what)


def has_reactor_delay(assoc: Any) -> bool:
    return hasattr(getattr(assoc, "dul", None), ATTRIBUTE)


def set_reactor_delay(assoc: Any, seconds: float) -> None:
    """How long the association's reactor sleeps when idle; a no-op (warned once) if this
    pynetdicom has no such attribute: the retrieve still works, only slower."""
    dul = getattr(assoc, "dul", None)
    if dul is not None and hasattr(dul, ATTRIBUTE):
        setattr(dul, ATTRIBUTE, seconds)
    elif dul is not None:
        _warn_once(f"DUL has no {ATTRIBUTE}")


class _Waker:
    """A socket pair: ``wake`` writes a byte, ``wait`` selects on it and the DUL's socket."""

    def __init__(self) -> None:
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)

    def wake(self) -> None:
        # full (a wake is pending anyway) or closed (the association ended)
        with contextlib.suppress(OSError):
            self._w.send(b"\0")

    def wait(self, dul: Any, seconds: float) -> None:
        sock = getattr(getattr(dul, "socket", None), "socket", None)
        if sock is None or isinstance(sock, ssl.SSLSocket):  # TLS buffers what select misses
            time.sleep(seconds)
            return
        try:
            ready, _, _ = select.select([sock, self._r], [], [], seconds)
        except (OSError, ValueError):  # the socket closed under us: pynetdicom will see it
            time.sleep(seconds)
            return
        if self._r in ready:
            with contextlib.suppress(OSError):  # BlockingIOError: drained
                while self._r.recv(4096):
                    pass

    def close(self) -> None:
        self._r.close()
        self._w.close()


def _sleep(seconds: float) -> None:
    """``time.sleep`` for pynetdicom's dul and association modules (see the module's doc)."""
    thread = threading.current_thread()
    if seconds <= REACTOR_POLL:
        waker = getattr(thread, WAKER, None)
        if waker is not None:
            waker.wait(thread, seconds)
            return
        if getattr(thread, QUEUE_WAIT, False):
            messages = thread.dimse.msg_queue  # type: ignore[attr-defined]
            with messages.not_empty:
                if not messages.queue:
                    messages.not_empty.wait(seconds)
            return
    time.sleep(seconds)


def _patched_time() -> types.ModuleType:
    module = types.ModuleType("time", "time, with pacs2xnat's event-driven sleep for pynetdicom")
    module.__dict__.update({k: v for k, v in vars(time).items() if not k.startswith("__")})
    module.sleep = _sleep  # type: ignore[attr-defined]
    return module


_lock = threading.Lock()
_TIME = _patched_time()
_MODULES = (pynetdicom.dul, pynetdicom.association)


def _install() -> bool:
    with _lock:
        for module in _MODULES:
            current = getattr(module, "time", None)
            if current is _TIME:
                continue
            if current is not time:
                _warn_once(f"{module.__name__} no longer sleeps through its module's time")
                return False
            module.time = _TIME  # type: ignore[attr-defined]
    return True


def wake_on_events(assoc: Any) -> bool:
    """Make this association's reactors wait for events rather than poll; call it before any
    traffic (``EVT_CONN_OPEN``). False (warned once) if this pynetdicom is not built as the seam
    expects; the caller then keeps a spinning pace (``set_reactor_delay``)."""
    dul = getattr(assoc, "dul", None)
    provider = getattr(dul, "to_provider_queue", None)
    if not isinstance(provider, queue.Queue) or not hasattr(dul, ATTRIBUTE):
        _warn_once("DUL has no provider queue")
        return False
    if not _install():
        return False
    if getattr(dul, WAKER, None) is None:
        waker = _Waker()
        put = provider.put

        def put_and_wake(item: Any, block: bool = True, timeout: float | None = None) -> None:
            put(item, block, timeout)
            waker.wake()

        provider.put = put_and_wake  # type: ignore[method-assign]
        setattr(dul, WAKER, waker)
        weakref.finalize(dul, waker.close)
        setattr(dul, ATTRIBUTE, REACTOR_POLL)  # the select's timeout, not a spin
    if getattr(assoc, "is_acceptor", False):
        setattr(assoc, QUEUE_WAIT, True)
    return True


def wakes_on_events(assoc: Any) -> bool:
    return getattr(getattr(assoc, "dul", None), WAKER, None) is not None
