"""It fails loudly when an upgrade changes a library internal that ``connectors/seams`` uses."""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
import types

import pytest
import typer
import typer.main
from openpyxl import Workbook
from pynetdicom import AE
from pynetdicom.association import Association

from connectors.app.cli import app
from connectors.seams import (
    dbt_duckdb,
    pynetdicom_dimse,
    pynetdicom_logging,
    pynetdicom_reactor,
    xnatpy_session,
)
from connectors.seams.openpyxl_write_only import WriteOnlyWorksheet
from connectors.seams.typer_parse import parse_command_line


def _association() -> Association:
    return Association(AE(), mode="requestor")


def test_pynetdicom_dul_still_has_its_reactor_delay() -> None:
    assoc = _association()
    assert pynetdicom_reactor.has_reactor_delay(assoc)
    assert isinstance(getattr(assoc.dul, pynetdicom_reactor.ATTRIBUTE), float)
    pynetdicom_reactor.set_reactor_delay(assoc, 0.00001)
    assert getattr(assoc.dul, pynetdicom_reactor.ATTRIBUTE) == 0.00001


def test_pynetdicom_reactors_still_poll_through_their_modules_time() -> None:
    """What ``wake_on_events`` replaces: both reactor loops sleep through ``time.sleep`` of
    their own module, the DUL for ``_run_loop_delay`` and the acceptor for 1 ms; primitives
    to send go through a ``queue.Queue``; received messages wait on one with a condition."""
    import inspect

    from pynetdicom.dul import DULServiceProvider

    assert "time.sleep(self._run_loop_delay)" in inspect.getsource(DULServiceProvider.run_reactor)
    assert "time.sleep(0.001)" in inspect.getsource(Association._run_reactor)
    assoc = _association()
    assert isinstance(assoc.dul.to_provider_queue, queue.Queue)
    assert isinstance(assoc.dimse.msg_queue, queue.Queue)
    assert isinstance(assoc.dimse.msg_queue.not_empty, threading.Condition)
    assert pynetdicom_reactor.wake_on_events(assoc)
    assert pynetdicom_reactor.wakes_on_events(assoc)
    import pynetdicom.association
    import pynetdicom.dul

    for module in (pynetdicom.dul, pynetdicom.association):
        assert module.time.sleep is pynetdicom_reactor._sleep
        assert module.time.monotonic is time.monotonic  # the rest of time as it was


class _Reactor(threading.Thread):
    """Stands for a pynetdicom reactor thread: sleeps once the way the reactor does."""

    def __init__(self, seconds: float) -> None:
        super().__init__(daemon=True)
        self.seconds = seconds

    def run(self) -> None:
        pynetdicom_reactor._sleep(self.seconds)


@pytest.mark.timeout(60)
def test_a_woken_reactor_stops_waiting_when_something_is_to_send_or_has_come(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the reactors' poll an hour long, each wait still ends at once on its event: a
    primitive put on the DUL's provider queue, bytes on its socket, a message on an acceptor's
    DIMSE queue. Without the seam each thread would sleep the hour (the join bounds it)."""
    monkeypatch.setattr(pynetdicom_reactor, "REACTOR_POLL", 3600.0)
    assoc = _association()
    assert pynetdicom_reactor.wake_on_events(assoc)
    waker = getattr(assoc.dul, pynetdicom_reactor.WAKER)
    ours, peer = socket.socketpair()
    for event in ("put", "received", "queued"):
        reactor = _Reactor(3600.0)
        if event == "queued":  # an acceptor's association thread
            setattr(reactor, pynetdicom_reactor.QUEUE_WAIT, True)
            reactor.dimse = assoc.dimse  # type: ignore[attr-defined]
        else:  # a DUL reactor
            reactor.socket = types.SimpleNamespace(socket=ours)  # type: ignore[attr-defined]
            setattr(reactor, pynetdicom_reactor.WAKER, waker)
        reactor.start()
        if event == "put":
            assoc.dul.to_provider_queue.put("a primitive")
        elif event == "received":
            peer.send(b"a PDU")
        else:
            assoc.dimse.msg_queue.put((1, "a C-STORE request"))
        reactor.join(30)
        assert not reactor.is_alive(), event
    ours.close()
    peer.close()


def test_pynetdicom_dimse_still_queues_messages_the_way_the_guard_reads_them() -> None:
    assoc = _association()
    dimse = assoc.dimse
    assert isinstance(dimse.msg_queue, queue.Queue)
    assert isinstance(dimse.msg_queue.mutex, type(threading.Lock()))
    assert dimse.get_msg(block=False) == (None, None)
    pynetdicom_dimse.guard_responses(assoc)
    assert dimse.get_msg(block=False) == (None, None)  # the guard answers an empty queue too


def test_pynetdicom_still_says_where_the_guard_reads_that_the_peer_has_gone() -> None:
    """The attributes ``peer_gone`` reads, on an association that never connected (its DUL
    thread not started, state Sta1: gone); and pynetdicom's blocking wait still reads the
    association's ``dimse_timeout``."""
    assoc = _association()
    assert assoc.is_aborted is False
    assert assoc.is_released is False
    assert assoc.acse.is_aborted() is False
    assert assoc.dul.state_machine.current_state == "Sta1"
    assert assoc.dul.is_alive() is False
    assoc.dimse_timeout = 12.5
    assert assoc.dimse.dimse_timeout == 12.5
    assert pynetdicom_dimse.peer_gone(assoc)


@pytest.mark.timeout(30)
def test_the_guarded_wait_hands_over_what_came_then_ends_at_once_when_the_peer_is_gone() -> None:
    """An hour's dimse_timeout, the peer gone: the queued response first, then (None, None)
    at once (the test's timeout is the bound)."""
    from pynetdicom.dimse_primitives import C_FIND

    assoc = _association()
    assoc.dimse_timeout = 3600
    pynetdicom_dimse.guard_responses(assoc)
    rsp = C_FIND()
    rsp.MessageIDBeingRespondedTo, rsp.Status = 1, 0x0000
    assoc.dimse.msg_queue.put((1, rsp))
    assert assoc.dimse.get_msg(block=True) == (1, rsp)
    assert assoc.dimse.get_msg(block=True) == (None, None)


def test_the_guard_leaves_responses_for_the_waiting_send_and_hands_requests_on() -> None:
    from io import BytesIO

    from pynetdicom.dimse_primitives import C_FIND

    assoc = _association()
    pynetdicom_dimse.guard_responses(assoc)
    rq, rsp = C_FIND(), C_FIND()
    rq.MessageID, rq.AffectedSOPClassUID, rq.Priority = 1, "1.2.840.10008.5.1.4.1.2.2.1", 2
    rq.Identifier = BytesIO(b"")
    rsp.MessageIDBeingRespondedTo, rsp.Status = 1, 0xFF00
    assert rq.is_valid_request
    assert not rsp.is_valid_request
    assoc.dimse.msg_queue.put((1, rsp))
    assert assoc.dimse.get_msg(block=False) == (None, None)  # the response stays queued
    assert assoc.dimse.get_msg(block=True) == (1, rsp)  # for the blocking reader
    assoc.dimse.msg_queue.put((1, rq))
    assert assoc.dimse.get_msg(block=False) == (1, rq)


def test_pynetdicom_config_still_has_the_identifier_switches() -> None:
    from pynetdicom import _config

    for name in pynetdicom_logging.SWITCHES:
        assert isinstance(getattr(_config, name), bool), name
    pynetdicom_logging.hide_identifiers()
    assert not any(getattr(_config, n) for n in pynetdicom_logging.SWITCHES)


def test_pynetdicom_binds_its_log_handlers_only_when_its_log_is_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``LOG_HANDLER_LEVEL`` is still read as each association binds its handlers: none when
    pynetdicom's log is at WARNING (as without --verbose), its standard ones at DEBUG."""
    from pynetdicom import _config, evt
    from pynetdicom._handlers import standard_dimse_recv_handler

    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", _config.LOG_HANDLER_LEVEL)
    log = logging.getLogger("pynetdicom")
    was = log.level
    try:
        for level, bound in ((logging.WARNING, False), (logging.DEBUG, True)):
            log.setLevel(level)
            pynetdicom_logging.log_dimse_only_if_shown()
            handlers = [h for h, *_ in _association().get_handlers(evt.EVT_DIMSE_RECV)]
            assert (standard_dimse_recv_handler in handlers) is bound, level
            assert not any(getattr(_config, n) for n in pynetdicom_logging.SWITCHES)
    finally:
        log.setLevel(was)


def test_dbt_duckdb_still_keeps_its_environment_where_the_seam_closes_it() -> None:
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    assert hasattr(DuckDBConnectionManager, "_ENV")
    assert hasattr(DuckDBConnectionManager._LOCK, "__enter__")
    dbt_duckdb.release_duckdb_environment()
    assert DuckDBConnectionManager._ENV is None


def test_openpyxl_write_only_sheets_are_still_that_class() -> None:
    assert isinstance(Workbook(write_only=True).create_sheet(), WriteOnlyWorksheet)


def test_typer_groups_still_keep_the_sub_command_words_where_the_parser_reads_them() -> None:
    command = typer.main.get_command(app)
    ctx = parse_command_line(command, ["--json", "demo", "serve", "--patients", "3"])
    assert ctx.command.name == "serve"
    assert ctx.params["patients"] == 3
    assert ctx.parent.params["patients"] == 40  # demo's own option, at its default
    assert parse_command_line(command, ["demo"]).command.name == "demo"
    with pytest.raises(typer.TyperException, match="No such option: --nope"):
        parse_command_line(command, ["load", "--nope"])


def test_xnatpy_session_still_lets_go_in_its_base_class() -> None:
    """``XNATSession.disconnect`` still asks XNAT first and then calls the base class, whose
    ``disconnect`` is the local half the seam calls on its own."""
    import inspect

    from xnat.session import BaseXNATSession, XNATSession

    assert issubclass(XNATSession, BaseXNATSession)
    assert XNATSession.disconnect is not BaseXNATSession.disconnect
    assert "/data/JSESSION" in inspect.getsource(XNATSession.disconnect)
    assert "/data/JSESSION" not in inspect.getsource(BaseXNATSession.disconnect)
    assert isinstance(inspect.getattr_static(BaseXNATSession, "interface"), property)
    assert callable(xnatpy_session.let_go)
