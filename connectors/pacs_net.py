"""Association plumbing shared by the DICOM connectors: timeouts, TCP_NODELAY, reactor pace.

Measured on this machine (benchmarks/load/README.md): pynetdicom leaves Nagle on, and its DUL
reactor sleeps ``_run_loop_delay`` (1 ms) whenever it finds no event; a C-GET is one
C-STORE round trip per instance, so those two sleeps, not decoding, cap a retrieve near 40 MB/s.
``tune_socket`` (an ``EVT_CONN_OPEN`` handler) sets TCP_NODELAY on every socket we open or
accept, and ``fast_reactor`` shortens the reactor's sleep while a transfer is under way (it
spins, so it is put back to pynetdicom's idle pace as soon as the transfer ends).

If ``connectors/pacs.py`` grows the same helpers, one of the two is removed at merge.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.association import Association

from connectors.config import Settings

logger = logging.getLogger(__name__)

IDLE_LOOP_DELAY = 0.001  # pynetdicom's default: seconds the reactor sleeps when idle
FAST_LOOP_DELAY = 0.00001  # while a retrieve runs: 2x the throughput of the default


def tune_socket(event: evt.Event) -> None:
    """``EVT_CONN_OPEN`` handler: TCP_NODELAY on the association's socket (never raises)."""
    try:
        sock = event.assoc.dul.socket.socket  # type: ignore[union-attr]
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (AttributeError, OSError) as e:  # a socket already closed: nothing to tune
        logger.debug("TCP_NODELAY not set: %s", e)


NET_HANDLERS: list[Any] = [(evt.EVT_CONN_OPEN, tune_socket)]


def make_ae(settings: Settings, *, maximum_pdu_size: int = 0) -> AE:
    """An AE with our calling AE title and the ACSE/DIMSE/network timeouts from ``[pacs]``.

    ``maximum_pdu_size=0`` (no limit) lets the PACS send its largest PDUs, which costs us fewer
    reactor turns per instance.
    """
    ae = AE(ae_title=settings.pacs.calling_aet)
    ae.acse_timeout = settings.pacs.acse_timeout
    ae.dimse_timeout = settings.pacs.dimse_timeout
    ae.network_timeout = settings.pacs.network_timeout
    ae.connection_timeout = settings.pacs.acse_timeout
    ae.maximum_pdu_size = maximum_pdu_size
    return ae


def set_reactor_delay(assoc: Association, seconds: float) -> None:
    """How long the association's DUL reactor sleeps when it finds nothing to do."""
    dul = getattr(assoc, "dul", None)
    if dul is not None and hasattr(dul, "_run_loop_delay"):
        dul._run_loop_delay = seconds


@contextlib.contextmanager
def fast_reactor(assoc: Association) -> Iterator[None]:
    """Spin the reactor fast for the duration of a transfer, then back to the idle pace."""
    set_reactor_delay(assoc, FAST_LOOP_DELAY)
    try:
        yield
    finally:
        set_reactor_delay(assoc, IDLE_LOOP_DELAY)


def fast_acceptor(event: evt.Event) -> None:
    """``EVT_CONN_OPEN`` handler for our storage SCP: TCP_NODELAY and a fast reactor.

    The PACS opens one association per C-MOVE and closes it when done, so the fast pace ends
    with it.
    """
    tune_socket(event)
    set_reactor_delay(event.assoc, FAST_LOOP_DELAY)
