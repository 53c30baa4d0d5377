"""The dcmtk back end's C-MOVE receiver (a real ``storescp --fork``) takes only whole files: one
still arriving stays in its folder, one whose association was cut is deleted by storescp, and
``settle`` says when the PACS's associations have ended. dcmtk's ``storescu`` plays the PACS,
through a proxy that can hold or cut what it sends."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from connectors.pacs.retrieve.dcmtk import _Exit
from connectors.pacs.retrieve.dcmtk_receiver import DcmtkMoveReceiver
from connectors.testbed.orthanc import free_port
from tests.support.fault_proxy import FaultProxy
from tests.support.pacs_fixtures import pacs_settings
from tests.support.real_parts import require_binary
from tests.support.xnat_fixtures import dicom_study

STUDY = "1.2.826.0.1.3680043.10.1234.77"


def _ct(folder: Path, side: int) -> Path:
    """A synthetic CT instance of ``STUDY`` with a ``side`` x ``side`` 16-bit image."""
    _, (path,) = dicom_study(folder, 1, study_uid=STUDY, side=side)
    return path


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[DcmtkMoveReceiver, FaultProxy]]:
    require_binary("/usr/bin/storescp", "dcmtk")
    port = free_port()
    nowhere = SimpleNamespace(host="127.0.0.1", port=1, aet="NOBODY")
    settings = pacs_settings(nowhere, move_destination="RX", receive_port=port)
    work = dataclasses.replace(settings.load, work_dir=str(tmp_path / "work"))
    settings = dataclasses.replace(settings, load=work)
    rx = DcmtkMoveReceiver(settings)
    rx.start()
    proxy = FaultProxy("127.0.0.1", port, pacs_connects=True)
    try:
        yield rx, proxy
    finally:
        proxy.close()
        rx.stop()


def _send(proxy: FaultProxy, *files: Path) -> subprocess.Popen[bytes]:
    storescu = require_binary("/usr/bin/storescu", "dcmtk")
    args = [storescu, "-aec", "RX", proxy.host, str(proxy.port), *map(str, files)]
    env = dict(os.environ, TCP_NODELAY="1")
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _dataset(path: Path) -> bytes:
    """An instance's data set as it was sent, without the File Meta (storescp writes its own)."""
    raw = path.read_bytes()
    meta_end = 132 + 12 + int.from_bytes(raw[140:144], "little")  # after (0002,0000)'s group
    return raw[meta_end:]


def _instances(folder: Path) -> list[bytes]:
    return sorted(_dataset(f) for f in folder.iterdir())


def _arriving(rx: DcmtkMoveReceiver, seconds: float = 30) -> Path:
    """The file storescp has begun to write for the big instance (more than its header)."""
    assert rx.folder is not None
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for f in rx.folder.iterdir():
            if f.stat().st_size > 600_000:  # past the small instance, inside the big one
                return f
        time.sleep(0.02)
    raise AssertionError("storescp never began the big instance")


def test_a_file_still_arriving_is_left_and_one_cut_off_is_deleted_by_storescp(
    receiver: tuple[DcmtkMoveReceiver, FaultProxy], tmp_path: Path
) -> None:
    rx, proxy = receiver
    small, big = _ct(tmp_path / "small", 512), _ct(tmp_path / "big", 1024)
    into = tmp_path / "into"
    into.mkdir()
    proxy.delay = 0.002  # seconds per 4 KB: the big instance takes about a second
    sender = _send(proxy, small, big)
    try:
        part = _arriving(rx)
        proxy.paused.set()  # the rest of the big instance waits in the proxy
        rx.take(STUDY, into)
        assert _instances(into) == [_dataset(small)]  # the whole one, not the one arriving
        assert part.exists()
        assert not rx.settle(timeout=0.3)  # its association is still open
        proxy.drop()  # the PACS's association is cut mid-instance
        assert rx.settle(timeout=10)
        assert not part.exists()  # storescp deleted the file whose C-STORE failed
        rx.take(STUDY, into)
        assert _instances(into) == [_dataset(small)]
    finally:
        proxy.paused.clear()
        sender.kill()
        sender.wait()


def test_a_file_that_finished_arriving_is_taken_whole(
    receiver: tuple[DcmtkMoveReceiver, FaultProxy], tmp_path: Path
) -> None:
    rx, proxy = receiver
    big = _ct(tmp_path / "big", 1024)
    into = tmp_path / "into"
    into.mkdir()
    sender = _send(proxy, big)
    assert sender.wait(timeout=60) == 0
    assert rx.settle(timeout=10)
    rx.take(STUDY, into)
    assert _instances(into) == [_dataset(big)]


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "Popen.wait"])
def test_a_tools_end_is_seen_as_it_happens(pidfd: bool) -> None:
    """The dcmtk back end's wait for a getscu/movescu (``dcmtk._Exit``): not ended within a
    short look while it runs, ended (and reaped) soon after it exits; without a pidfd (a kernel
    before 5.3) by ``Popen.wait`` as before."""
    proc = subprocess.Popen(["sleep", "0.3"])
    with _Exit(proc) as ended:
        assert ended.fd is not None  # this machine's kernel has pidfd_open
        if not pidfd:
            os.close(ended.fd)
            ended.fd = None
        assert not ended.within(0.05)
        assert proc.returncode is None
        assert ended.within(10)
        assert proc.returncode == 0


def test_stopping_frees_the_port_even_with_an_association_open(tmp_path: Path) -> None:
    """storescp's children inherit its listening socket: one still serving an association
    (here a connection that never finishes associating) kept ``receive_port`` taken after the
    receiver stopped, until its ACSE timeout. ``stop`` ends the children too."""
    require_binary("/usr/bin/storescp", "dcmtk")
    port = free_port()
    nowhere = SimpleNamespace(host="127.0.0.1", port=1, aet="NOBODY")
    settings = pacs_settings(nowhere, move_destination="RX", receive_port=port, acse_timeout=600)
    work = dataclasses.replace(settings.load, work_dir=str(tmp_path / "work"))
    rx = DcmtkMoveReceiver(dataclasses.replace(settings, load=work))
    rx.start()
    with socket.create_connection(("127.0.0.1", port)):
        deadline = time.monotonic() + 10
        while not rx._children() and time.monotonic() < deadline:  # storescp forks for it
            time.sleep(0.02)
        assert rx._children(), "storescp forked no child for the connection"
        rx.stop()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_server(("127.0.0.1", port)):
                    break
            except OSError:
                time.sleep(0.05)
        else:
            raise AssertionError(f"port {port} still taken after stop()")
