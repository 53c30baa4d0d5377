"""DICOM networking plumbing shared by every pacs2xnat SCU and SCP: TCP_NODELAY, timeouts, AEs.

pynetdicom does not set ``TCP_NODELAY`` on its sockets. Against a DCMTK-based PACS (Orthanc,
dcmqrscp) that leaves Nagle's algorithm and the peer's delayed ACK to meet on every small PDU,
about 40 ms a round trip: 2.5× slower C-FIND and up to 37× slower C-GET on this machine.
``NODELAY_HANDLERS`` fixes it for any association, as requestor or acceptor:

    assoc = ae.associate(host, port, ae_title="ORTHANC", evt_handlers=NODELAY_HANDLERS)
    ae.start_server(("127.0.0.1", 11112), block=False, evt_handlers=NODELAY_HANDLERS)

Every association pacs2xnat opens or accepts takes ``CONNECTION_HANDLERS`` instead: TCP_NODELAY,
and reactors that wake on events rather than poll every millisecond
(``connectors/seams/pynetdicom_reactor.py``), for C-FIND, C-GET and C-MOVE alike.

``make_ae(settings, contexts)`` builds an AE with our AE title and the ACSE/DIMSE/network and
connection timeouts from ``[pacs]``; ``open_association(settings, ae)`` associates with the
configured PACS (TCP_NODELAY on), asks again when the PACS drops a request it had connected for
(``ABORTED_REQUEST_PAUSES``), turns every refusal into ``PacsUnreachable`` naming host, port and
both AE titles (exit code 3), and applies ``guard_responses`` (a fix for a pynetdicom
race that loses C-FIND responses).
"""

from __future__ import annotations

import logging
import socket
import time
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pynetdicom import AE, evt

from connectors.errors import PacsUnreachable
from connectors.seams.pynetdicom_dimse import guard_responses
from connectors.seams.pynetdicom_logging import log_dimse_only_if_shown
from connectors.seams.pynetdicom_reactor import wake_on_events

if TYPE_CHECKING:
    from pynetdicom.association import Association
    from pynetdicom.presentation import PresentationContext

    from connectors.config import PacsConfig, Settings

logger = logging.getLogger(__name__)


def set_tcp_nodelay(event: evt.Event) -> None:
    """``evt.EVT_CONN_OPEN`` handler: switch Nagle off on the association's socket."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as e:  # the peer may already have gone; the association will say so
        logger.debug("TCP_NODELAY not set: %s", e)


#: Pass as ``evt_handlers=`` to ``AE.associate`` or ``AE.start_server``.
NODELAY_HANDLERS: list[Any] = [(evt.EVT_CONN_OPEN, set_tcp_nodelay)]


_CONNECTED: weakref.WeakSet[Any] = weakref.WeakSet()  # associations whose socket connected


def on_connection_open(event: evt.Event) -> None:
    """``evt.EVT_CONN_OPEN`` handler: TCP_NODELAY, and the association's reactors wake on
    events (before any traffic: pynetdicom calls it as the socket connects or is accepted)."""
    set_tcp_nodelay(event)
    wake_on_events(event.assoc)
    _CONNECTED.add(event.assoc)


#: Seconds to wait before asking again when the PACS aborts (drops) an association request; a
#: refusal (A-ASSOCIATE-RJ) or no connection at all is not asked again here.
ABORTED_REQUEST_PAUSES = (0.5, 2.0)

#: Ours, for every association pacs2xnat opens (``open_association``) or accepts (storage SCP).
CONNECTION_HANDLERS: list[Any] = [(evt.EVT_CONN_OPEN, on_connection_open)]


def has_tcp_nodelay(assoc: Association) -> bool:
    """Whether the association's socket has TCP_NODELAY set (for tests and ``doctor``)."""
    sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if sock is None:
        return False
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def _pacs(settings: Settings | PacsConfig) -> PacsConfig:
    pacs = getattr(settings, "pacs", None)
    return settings if pacs is None else pacs  # type: ignore[return-value]


def make_ae(
    settings: Settings | PacsConfig,
    contexts: Sequence[PresentationContext] | Sequence[str] = (),
) -> AE:
    """An AE titled ``calling_aet`` with the configured timeouts and requested ``contexts``
    (presentation contexts, or abstract syntax UIDs with pynetdicom's default transfer syntaxes).
    pynetdicom's per-message log handlers are bound only if its log is shown (``--verbose``).
    """
    cfg = _pacs(settings)
    log_dimse_only_if_shown()
    ae = AE(ae_title=cfg.calling_aet)
    ae.acse_timeout = cfg.acse_timeout
    ae.dimse_timeout = cfg.dimse_timeout
    ae.network_timeout = cfg.network_timeout
    ae.connection_timeout = cfg.acse_timeout
    for cx in contexts:
        if isinstance(cx, str):
            ae.add_requested_context(cx)
        else:
            ae.add_requested_context(str(cx.abstract_syntax), cx.transfer_syntax)
    return ae


def describe(settings: Settings | PacsConfig) -> str:
    """``PACS ORTHANC at 127.0.0.1:4242 (calling AE PACS2XNAT)`` for messages."""
    cfg = _pacs(settings)
    return (
        f"PACS {cfg.called_aet} at {cfg.host}:{cfg.port} "
        f"(called AE title {cfg.called_aet!r}, calling AE title {cfg.calling_aet!r})"
    )


def open_association(
    settings: Settings | PacsConfig,
    ae: AE,
    *,
    ext_neg: list[Any] | None = None,
    evt_handlers: list[Any] | None = None,
) -> Association:
    """Associate with the configured PACS (``CONNECTION_HANDLERS``); ``PacsUnreachable`` if
    refused."""
    cfg = _pacs(settings)
    handlers = [*CONNECTION_HANDLERS, *(evt_handlers or [])]
    for pause in (*ABORTED_REQUEST_PAUSES, None):
        try:
            assoc = ae.associate(
                cfg.host,
                cfg.port,
                ae_title=cfg.called_aet,
                ext_neg=ext_neg,
                evt_handlers=handlers,
            )
        except (OSError, ValueError) as e:
            raise PacsUnreachable(f"cannot reach {describe(cfg)}: {e}") from None
        if assoc.is_established:
            guard_responses(assoc)
            return assoc
        if not (assoc.is_aborted and assoc in _CONNECTED) or pause is None:
            break  # refused, no connection at all, or asked often enough
        # A busy PACS (Orthanc among them) may drop a request it would accept a moment later.
        logger.info("%s aborted the association request; asking again in %g s", describe(cfg),
                    pause)  # fmt: skip
        time.sleep(pause)
    check = (
        f"check that the PACS knows our AE title {cfg.calling_aet!r} and that its AE title is "
        f"{cfg.called_aet!r}"
    )
    if assoc.is_rejected:
        raise PacsUnreachable(f"{describe(cfg)} rejected the association: {check}")
    if assoc.is_aborted:  # some PACS (and a busy Orthanc) drop the connection instead
        raise PacsUnreachable(f"{describe(cfg)} aborted the association request: {check}")
    raise PacsUnreachable(
        f"cannot reach {describe(cfg)}: no association (connection refused or timed out "
        f"after {cfg.acse_timeout:g} s)"
    )


__all__ = [
    "CONNECTION_HANDLERS",
    "NODELAY_HANDLERS",
    "describe",
    "has_tcp_nodelay",
    "make_ae",
    "open_association",
    "set_tcp_nodelay",
]


def release_quietly(assoc: Association) -> None:
    """Release an association that may already be dead (then nothing is left to do)."""
    try:
        assoc.release()
    except Exception as e:
        logger.debug("release failed: %s", e)


def abort_quietly(assoc: Association) -> None:
    """Abort an association that may already be dead (then nothing is left to do)."""
    try:
        assoc.abort()
    except Exception as e:
        logger.debug("abort failed: %s", e)
