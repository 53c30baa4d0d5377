"""The pace of pynetdicom's reactors during a retrieve (measured in benchmarks/load).

A C-GET or C-MOVE is one C-STORE round trip per instance, and every round trip meets
pynetdicom's polling sleeps (1 ms, ``connectors/seams/pynetdicom_reactor.py``). Every association
pacs2xnat opens or accepts wakes on events instead (``net.CONNECTION_HANDLERS``), so nothing here
is needed on the pynetdicom the seam knows. Should an upgrade leave the seam unable to wake them,
``fast_reactor`` falls back to what retrieves did before: shorten the DUL reactor's sleep to
10 µs while a transfer runs (about 2x the throughput of 1 ms, at the cost of a spinning thread),
and back to pynetdicom's idle pace afterwards; ``fast_acceptor`` does the same for the PACS's
association to our C-MOVE storage SCP (the association that sends the C-MOVE brings only its
responses and keeps the idle pace).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from pynetdicom import evt
from pynetdicom.association import Association

from connectors.pacs.net import on_connection_open
from connectors.seams.pynetdicom_reactor import set_reactor_delay, wakes_on_events

IDLE_LOOP_DELAY = 0.001  # pynetdicom's default: seconds the reactor sleeps when idle
FAST_LOOP_DELAY = 0.00001  # while a transfer runs, if the reactor cannot wake on events


@contextlib.contextmanager
def fast_reactor(assoc: Association) -> Iterator[None]:
    """For the duration of a transfer: nothing if the reactor wakes on events, else spin it."""
    if wakes_on_events(assoc):
        yield
        return
    set_reactor_delay(assoc, FAST_LOOP_DELAY)
    try:
        yield
    finally:
        set_reactor_delay(assoc, IDLE_LOOP_DELAY)


def fast_acceptor(event: evt.Event) -> None:
    """``EVT_CONN_OPEN`` handler for our C-MOVE storage SCP: TCP_NODELAY and reactors that wake
    on events, or (if they cannot) a spinning one. The PACS opens one association per C-MOVE
    and closes it when done, so the pace ends with it."""
    on_connection_open(event)
    if not wakes_on_events(event.assoc):
        set_reactor_delay(event.assoc, FAST_LOOP_DELAY)


ACCEPTOR_HANDLERS: list[Any] = [(evt.EVT_CONN_OPEN, fast_acceptor)]
