"""The optional dcmtk back end (``[pacs] retrieve_backend = "dcmtk"``): Debian's getscu/movescu.

Measured in benchmarks/load: pynetdicom spends a retrieve handing every PDU between its
threads, and stays near a third of dcmtk's ``getscu`` however it is tuned. dcmtk's tools run
with ``TCP_NODELAY=1`` in their environment (Debian's dcmtk leaves Nagle on otherwise, which
makes a C-GET 50x slower) and ``+B`` (bit-preserving: each instance is written to disk as it
arrives). Files land in a hidden staging folder inside ``dest`` and are renamed to
``<SOPInstanceUID>.dcm``, so both back ends leave the same folder behind.

C-MOVE: one dcmtk ``storescp --fork +B +xa`` listens on ``receive_port`` for the back end's
whole life (``DcmtkMoveReceiver``: a child process per PACS association, every transfer syntax
the PACS proposes accepted, so instances arrive as stored) and several ``movescu`` (no storage
SCP of their own) run at once, up to ``max_associations``; when one ends, the files of its
study (by Study Instance UID in each file's header) are taken from storescp's folder.
Debian's getscu 3.6.7 cannot do the same for C-GET: it proposes one preferred transfer syntax
per SOP class (no ``+xa``, no configuration file), so a PACS must transcode what it stores
otherwise (or refuse it): with the dcmtk back end, prefer C-MOVE for compressed studies. With
``+B`` dcmtk 3.6.7's getscu ignores ``-od`` and writes to its working directory, so it runs
inside the staging folder (storescp inside its own, ``dcmtk_receiver.py``). A window's end
(``[pacs] windows``) ends the getscu or movescu in hand (``run``): getscu's files it answered a
C-STORE for are kept; after a movescu, the PACS's associations are given time to end (the
instance in flight finishes) and only files no storescp child holds open are taken. Continued,
it asks by query files for what is missing (``resume.py``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from pydicom import dcmwrite
from pydicom.dataset import Dataset
from pynetdicom.association import Association

from connectors.config import Settings
from connectors.pacs.dcmtk_tools import (
    find_tool,
    log_tail,
    pidfd,
    refused,
    scu_args,
    tool_env,
)
from connectors.pacs.dicom_head import Head, read_head
from connectors.pacs.net import release_quietly
from connectors.pacs.retrieve.dcmtk_receiver import DcmtkMoveReceiver
from connectors.pacs.retrieve.dimse import SubOperations
from connectors.pacs.retrieve.resume import Canceller, remaining_identifiers
from connectors.pacs.storage import DISK_FULL_ERRNOS, StudySink, file_name_for

logger = logging.getLogger(__name__)

_STATUS_RE = re.compile(r"Received (?:Final )?(?:C-GET|C-MOVE|Move) Response \(([^)]*)\)")
_COUNT_RE = re.compile(r"Number of (Remaining|Completed|Failed|Warning) Suboperations\s*:\s*(\d+)")
_COUNT_KEYS = ("Remaining", "Completed", "Failed", "Warning")
POLL = 0.2  # seconds between two looks at a window's end while a dcmtk tool runs
_STATUS_CODES = {"Success": 0x0000, "Warning": 0xB000, "Cancel": 0xFE00}
_DISK_FULL = ("No space left", "Disk quota", "File too large")


class DcmtkBackend:
    """Runs one getscu/movescu per study; the Retriever bounds how many at once."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.method = settings.pacs.retrieve
        self.tool = find_tool("getscu" if self.method == "c-get" else "movescu")
        self._receiver: DcmtkMoveReceiver | None = None
        self._start_lock = threading.Lock()

    def close(self) -> None:
        """Stop the C-MOVE receiver, if one was started."""
        with self._start_lock:
            receiver, self._receiver = self._receiver, None
        if receiver is not None:
            receiver.stop()

    def _move_receiver(self) -> DcmtkMoveReceiver:
        with self._start_lock:
            if self._receiver is None:
                receiver = DcmtkMoveReceiver(self.settings)
                receiver.start()
                self._receiver = receiver
            return self._receiver

    def run(
        self,
        sink: StudySink,
        cancel: Canceller | None = None,
        kept: set[str] | None = None,
        find: Callable[[], Association] | None = None,
    ) -> SubOperations:
        """Retrieve ``sink``'s study into its folder; with ``kept`` (a paused study's files, C-GET)
        only what is missing, by a C-FIND on ``find()``'s association (``resume.py``).

        ``cancel.stop()`` is asked every ``POLL`` seconds while the tool runs (C-GET): when it
        says so the tool is ended and only the instances it answered are kept (``_keep_answered``).
        Returns the final DIMSE status (None when the association was lost) and the counts."""
        p = self.settings.pacs
        staging = sink.folder / ".dcmtk"
        shutil.rmtree(staging, ignore_errors=True)  # a paused run's: its files may be partial
        staging.mkdir(mode=0o700)
        args = scu_args(self.tool, p)
        if self.method == "c-get":
            args += ["+B", "-od", str(staging)]
        queries = sink.folder / ".dcmtk-queries"
        shutil.rmtree(queries, ignore_errors=True)
        asks: list[str] = []
        if kept and find is not None:
            asks = _write_queries(_remaining(find, sink.study_instance_uid, kept), queries)
            if not asks:  # every instance arrived before the pause
                staging.rmdir()
                return SubOperations(0x0000, total=0)
        else:
            args += ["-k", "QueryRetrieveLevel=STUDY"]
            args += ["-k", f"StudyInstanceUID={sink.study_instance_uid}"]
        receiver = None
        if self.method == "c-move":  # the PACS sends to our storescp, not to movescu
            receiver = self._move_receiver()
            args += ["-aem", p.move_destination]
        args += [p.host, str(p.port), *asks]
        stop = cancel.stop if cancel is not None else None
        stopped = False
        heads: dict[str, Head] = {}
        try:
            log, stopped = _run_tool(args, staging, stop)
        finally:
            if receiver is not None:
                if stopped:  # the PACS finishes the C-STORE in flight and ends its association
                    receiver.settle()
                heads = receiver.take(sink.study_instance_uid, staging)
            shutil.rmtree(queries, ignore_errors=True)
        if stopped and cancel is not None:
            cancel.cancelled = True
            if receiver is None:  # getscu: its log says which files are whole
                _keep_answered(staging, log)
        self._collect(staging, sink, heads)
        if stopped:
            return SubOperations()
        if (error := refused(p, log)) is not None:
            raise error
        if any(s in log for s in _DISK_FULL):
            sink.disk_full = True
            sink.last_error = log_tail(log)
        return _outcome(log, max(1, len(asks)))

    def _collect(self, staging: Path, sink: StudySink, heads: dict[str, Head]) -> None:
        """Rename ``<modality>.<uid>`` files to ``<uid>.dcm`` in the study folder and count;
        ``heads``: those already read (C-MOVE's ``take``), the others are read here."""
        try:
            for f in staging.iterdir():
                if not f.is_file():
                    continue
                head = heads.get(f.name) or read_head(f)
                uid = _sop_instance_uid(f.name, head)
                target = sink.folder / file_name_for(uid)
                size = f.stat().st_size
                os.replace(f, target)
                sink.files += 1
                sink.bytes += size
                sink.received[uid] = head.transfer_syntax if head else ""  # +B: as it arrived
            staging.rmdir()
        except OSError as e:
            if e.errno in DISK_FULL_ERRNOS:
                sink.disk_full = True
            sink.errors += 1
            sink.last_error = e.strerror or str(e)


_NAME_RE = re.compile(r"^(?:[A-Za-z][A-Za-z0-9_-]*\.)?([0-9][0-9.]*)$")


def _sop_instance_uid(name: str, head: Head | None) -> str:
    """The SOP Instance UID from dcmtk's ``<MOD>.<uid>`` name, else from the File Meta header
    (an unreadable one: dcmtk's name is kept, hashed by file_name_for)."""
    m = _NAME_RE.match(name)
    if m:
        return m.group(1)
    return (head.sop_instance_uid if head else "") or name


def _run_tool(args: list[str], staging: Path, stop: Callable[[], bool] | None) -> tuple[str, bool]:
    """Run a dcmtk tool inside ``staging`` (its log in a file: a full pipe would stop it),
    asking ``stop`` every ``POLL`` seconds; True when it said so and the tool was ended."""
    env = tool_env()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(args, cwd=staging, env=env, stdout=out, stderr=subprocess.STDOUT)
        stopped = False
        try:
            with _Exit(proc) as ended:
                while not ended.within(POLL):
                    if stop is not None and stop():
                        logger.info("a PACS window ended: the dcmtk retrieval in progress ends")
                        stopped = True
                        proc.terminate()  # the association ends with it
                        proc.wait()
                        break
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        out.seek(0)
        return out.read().decode(errors="replace"), stopped


class _Exit:
    """A child's end, seen the moment it happens: ``Popen.wait(timeout)`` polls with sleeps
    growing to 50 ms (CPython's subprocess): a 0.17 s child was seen ended 31.6 ms late on
    average (2.9 ms so), beside a 100-image study's ~0.2 s C-MOVE. A pidfd (Linux >= 5.3) wakes
    ``select`` when the child ends; without one, ``Popen.wait`` as before."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc, self.fd = proc, pidfd(proc.pid)

    def __enter__(self) -> _Exit:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)

    def within(self, seconds: float) -> bool:
        """True once the child has ended (reaped), waiting at most ``seconds``."""
        if self.fd is not None:
            if not select.select([self.fd], [], [], seconds)[0]:
                return False
            self.proc.wait()
            return True
        try:
            self.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return False
        return True


def _keep_answered(staging: Path, log: str) -> None:
    """After a tool was ended: keep the files it answered a C-STORE for (written whole), the
    oldest first; the newest beyond them may be partial and is deleted (asked for again)."""
    answered = log.count("Sending C-STORE Response")
    files = sorted(
        (f for f in staging.iterdir() if f.is_file()), key=lambda f: f.stat().st_mtime_ns
    )
    for f in files[answered:]:
        with contextlib.suppress(OSError):
            f.unlink()


def _remaining(find: Callable[[], Association], uid: str, kept: set[str]) -> list[Dataset]:
    """What a paused study still lacks, by C-FIND on a Find-only association (``resume.py``)."""
    assoc = find()
    try:
        return remaining_identifiers(assoc, uid, kept)
    finally:
        release_quietly(assoc)


def _write_queries(idents: list[Dataset], folder: Path) -> list[str]:
    """Each identifier as a query file for getscu/movescu (one C-GET/C-MOVE each)."""
    if not idents:
        return []
    folder.mkdir(mode=0o700)
    names = []
    for i, ds in enumerate(idents):
        path = folder / f"q{i:05d}.dcm"
        dcmwrite(path, ds, implicit_vr=False, little_endian=True)  # a bare dataset
        names.append(str(path))
    return names


def _outcome(log: str, asks: int) -> SubOperations:
    """The tool's ``asks`` C-GETs/C-MOVEs from its log: the first final status that is not
    Success (None when one is missing: the association was lost), their counts added."""
    finals: list[tuple[str, dict[str, int]]] = []
    pieces = _STATUS_RE.split(log)  # [before, status1, after1, status2, after2, ...]
    for status, after in zip(pieces[1::2], pieces[2::2], strict=True):
        counts = {k: int(v) for k, v in _COUNT_RE.findall(after)}
        if status != "Pending":
            finals.append((status, counts))
    left, done, failed, warned = (sum(c.get(k, 0) for _s, c in finals) for k in _COUNT_KEYS)
    total = left + done + failed + warned or None
    codes = [_STATUS_CODES.get(s.split(":")[0].strip(), 0xC000) for s, _c in finals]
    status = next((c for c in codes if c != 0x0000), 0x0000)
    if len(finals) < asks or "Association Aborted" in log:
        status = None
    return SubOperations(status, done, failed, warned, total)
