"""The dcmtk back end's C-MOVE receiver: one ``storescp --fork``.

Which received files are whole: storescp (``storeSCP`` in dcmtk's dcmnet/apps/storescp.cc)
writes each instance into its file while it arrives and, when the C-STORE fails (an association
aborted part way), deletes that file. So a file in its folder that no storescp child process
holds open is whole; one held open is still arriving. After a window's end the back end waits
for the PACS's associations to end (``settle``), so the instances in flight are finished, and
``take`` moves only files no child holds open.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from connectors.config import Settings
from connectors.errors import ConfigError
from connectors.pacs.dcmtk_tools import find_tool, log_tail, pidfd, seconds_arg, tool_env
from connectors.pacs.dicom_head import Head, read_head

SETTLE_SECONDS = 10.0  # at most, for the PACS's associations to end after a window's end
_LOOK = 0.05


class DcmtkMoveReceiver:
    """dcmtk's ``storescp`` on ``[pacs] receive_port`` (``--fork``: one child per association,
    so the PACS's C-MOVEs of several studies are received at once; ``+B`` bit-preserving,
    ``+xa`` every transfer syntax), writing into one folder; ``take`` moves a study's files out
    once its C-MOVE has ended (storescp answers each C-STORE after writing the file, and the
    PACS answers the C-MOVE after the last C-STORE, so they are all there)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.tool = find_tool("storescp")
        self.folder: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._heads: dict[str, Head] = {}  # file name -> its head, read once
        self._lock = threading.Lock()

    def start(self, timeout: float = 10.0) -> None:
        p = self.settings.pacs
        try:  # storescp would fail on a taken port, after a listener there looked like it
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as storescp does
                probe.bind(("", p.receive_port))
        except OSError as e:
            raise ConfigError(
                f"[pacs] receive_port {p.receive_port}: cannot listen there for C-MOVE "
                f"({e.strerror})"
            ) from None
        self.settings.work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(".storescp", dir=self.settings.work_dir))
        log = self.folder.with_suffix(".log")  # not a pipe: a full one would stop storescp
        aet = p.move_destination or p.calling_aet
        args = [self.tool, "--fork", "+B", "+xa", "-aet", aet, "-od", str(self.folder)]
        args += ["-ta", seconds_arg(p.acse_timeout), "-td", seconds_arg(p.dimse_timeout)]
        args.append(str(p.receive_port))
        with open(log, "wb") as err:
            self._proc = subprocess.Popen(
                args,
                cwd=self.folder,
                env=tool_env(),
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                text = log.read_text(errors="replace")
                self.stop()
                raise ConfigError(
                    f"[pacs] receive_port {p.receive_port}: storescp cannot listen there for "
                    f"C-MOVE: {log_tail(text)}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", p.receive_port), timeout=0.2),
            ):
                return
            time.sleep(0.05)
        self.stop()
        raise ConfigError(f"[pacs] receive_port {p.receive_port}: storescp did not start")

    def take(self, study_uid: str, into: Path) -> dict[str, Head]:
        """Move every whole file of ``study_uid`` received so far from storescp's folder
        ``into``; a file a child still holds open is left for the next look. Returns the heads
        of the files moved (by name), read once here (``dicom_head.py``) for the caller too."""
        assert self.folder is not None
        moved: dict[str, Head] = {}
        with self._lock:
            names = [f.name for f in self.folder.iterdir()]
            arriving = self._open_files()  # after the listing: a file not open now is whole
            for name in names:
                f = self.folder / name
                if f in arriving:
                    continue
                head = self._heads.get(name) or read_head(f)
                if head is None or head.study_instance_uid is None:
                    continue  # not DICOM (or already taken by another study's look)
                if head.study_instance_uid != study_uid:
                    self._heads[name] = head
                    continue
                self._heads.pop(name, None)
                with contextlib.suppress(FileNotFoundError):
                    os.replace(f, into / name)
                    moved[name] = head
        return moved

    def settle(self, timeout: float = SETTLE_SECONDS) -> bool:
        """Wait until no association is open (storescp has no child process left), at most
        ``timeout`` seconds: after a window's end the PACS finishes the C-STORE in flight and
        ends its association. True when none is left."""
        deadline = time.monotonic() + timeout
        while self._children():
            if time.monotonic() >= deadline:
                return False
            time.sleep(_LOOK)
        return True

    def _children(self) -> list[int]:
        """storescp's living child processes (one per open association), from /proc."""
        if self._proc is None:
            return []
        pid = self._proc.pid
        try:
            kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:  # a kernel without CONFIG_PROC_CHILDREN: every process's parent
            kids = [p.name for p in Path("/proc").iterdir() if _parent(p) == pid]
        return [int(k) for k in kids if _alive(int(k))]

    def _open_files(self) -> set[Path]:
        """The files storescp's children hold open in its folder (instances still arriving)."""
        assert self.folder is not None
        held = set()
        for kid in self._children():
            fds = Path(f"/proc/{kid}/fd")
            with contextlib.suppress(OSError):
                for fd in fds.iterdir():
                    with contextlib.suppress(OSError):
                        target = Path(os.readlink(fd))
                        if target.parent == self.folder:
                            held.add(target)
        return held

    def stop(self) -> None:
        """End storescp and the children it forked: each child holds the listening socket
        (inherited), so one left with an open association would keep ``receive_port`` taken
        after us and the next retrieval could not listen there."""
        if self._proc is not None:
            kids = [fd for kid in self._children() if (fd := pidfd(kid)) is not None]
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None
            for fd in kids:  # storescp's SIGTERM does not reach them
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(fd, signal.SIGTERM)
                os.close(fd)
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            with contextlib.suppress(OSError):
                self.folder.with_suffix(".log").unlink()
            self.folder = None


def _stat_fields(proc: Path) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first, then ppid)."""
    try:
        return proc.joinpath("stat").read_text().rpartition(")")[2].split()
    except OSError:
        return []


def _parent(proc: Path) -> int | None:
    fields = _stat_fields(proc) if proc.name.isdigit() else []
    return int(fields[1]) if len(fields) > 1 else None


def _alive(pid: int) -> bool:
    """True unless the process is gone or a zombie (ended, not yet reaped by storescp)."""
    fields = _stat_fields(Path(f"/proc/{pid}"))
    return bool(fields) and fields[0] not in ("Z", "X")
