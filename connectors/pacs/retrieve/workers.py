"""C-GET and C-MOVE in worker processes: one association per process, so they share no GIL.

Measured in benchmarks/load: two pynetdicom associations in threads of one process get ~1.5x
one association (each association runs two Python threads that take turns on the GIL); in two
processes they get ~3x, near dcmtk's getscu. ``Retriever`` uses this pool for pynetdicom C-GET
and C-MOVE when ``max_associations`` > 1 (``move_in_processes=False``: C-MOVE in threads): each
C-MOVE worker then also runs a storage SCP on the same ``receive_port`` (``SO_REUSEPORT``), the
studies routed through ``registry`` (``storage_scp.py``).

Each worker is a spawned process holding a one-association ``Retriever``; a job is
``(study uid, dest, expected)`` and the answer a plain tuple, rebuilt into ``RetrievedStudy``
or the same exception in the caller's thread. A worker that dies is replaced, and its study
fails as ``retrieve_failed``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import queue
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from connectors.config import Settings
from connectors.errors import ConfigError, PacsUnreachable, StudyFailed
from connectors.pacs.retrieve.engine import AssociationRetriever

logger = logging.getLogger(__name__)

_CTX = multiprocessing.get_context("spawn")  # never fork a process that runs threads
Answer = tuple[Any, ...]


class WorkerPool:
    """``size`` spawned processes, each with its own association; thread-safe ``run``."""

    def __init__(self, settings: Settings, size: int, registry: Path | None = None) -> None:
        self._registry = registry
        self._settings = dataclasses.replace(
            settings, pacs=dataclasses.replace(settings.pacs, max_associations=1)
        )
        self._idle: queue.Queue[tuple[BaseProcess, Connection]] = queue.Queue()
        self._all: list[tuple[BaseProcess, Connection]] = []
        for _ in range(size):
            self._idle.put(self._spawn())

    def _spawn(self) -> tuple[BaseProcess, Connection]:
        parent, child = _CTX.Pipe()
        proc = _CTX.Process(
            target=_worker_main,
            args=(child, self._settings, self._registry),
            daemon=True,
            name="retrieve",
        )
        proc.start()
        child.close()
        self._all.append((proc, parent))
        return proc, parent

    def run(self, uid: str, dest: Path, expected: int | None) -> Answer:
        """Run one retrieve in an idle worker; the answer tuple (see ``_worker_main``).

        The worker's own DIMSE/network timeouts should end a dead transfer; if they do not
        (seen after an association reset mid C-GET), the worker is killed once ``dest`` has
        not grown for ``stall_seconds`` and the study fails as ``timeout``.
        """
        proc, conn = self._idle.get()
        try:
            conn.send((uid, str(dest), expected))
            answer = self._wait(conn, dest)
            if answer is None:
                logger.warning("a retrieve worker stalled on a study; starting another")
                _stop(proc, conn, graceful=False)
                proc, conn = self._spawn()
                return ("failed", "timeout",
                        f"study {uid}: no data from the PACS for {self.stall_seconds:g} s",
                        expected, _count(dest))  # fmt: skip
        except (EOFError, OSError) as e:
            logger.warning("a retrieve worker died (%s); starting another", e)
            _stop(proc, conn)
            proc, conn = self._spawn()
            return ("failed", "retrieve_failed", f"study {uid}: the retrieve worker died",
                    expected, None)  # fmt: skip
        finally:
            self._idle.put((proc, conn))
        return answer

    @property
    def stall_seconds(self) -> float:
        pacs = self._settings.pacs
        return pacs.dimse_timeout + pacs.network_timeout

    def _wait(self, conn: Connection, dest: Path) -> Answer | None:
        """The worker's answer, or None when ``dest`` made no progress for ``stall_seconds``."""
        last, last_change = _progress(dest), time.monotonic()
        while not conn.poll(1.0):
            now_progress = _progress(dest)
            if now_progress != last:
                last, last_change = now_progress, time.monotonic()
            elif time.monotonic() - last_change > self.stall_seconds:
                return None
        answer: Answer = conn.recv()
        return answer

    def close(self) -> None:
        for proc, conn in self._all:
            _stop(proc, conn)
        self._all = []


def _progress(dest: Path) -> tuple[int, int]:
    """(files, bytes) under ``dest``, counting instances still being written (``.part``)."""
    files = size = 0
    with contextlib.suppress(OSError), os.scandir(dest) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                size += entry.stat().st_size
                files += 1
    return files, size


def _count(dest: Path) -> int:
    with contextlib.suppress(OSError):
        return sum(1 for p in dest.iterdir() if p.suffix == ".dcm")
    return 0


def _stop(proc: BaseProcess, conn: Connection, graceful: bool = True) -> None:
    if not graceful:
        proc.kill()
    with contextlib.suppress(OSError, ValueError):  # already gone
        conn.send(None)
    proc.join(timeout=10)
    if proc.is_alive():
        proc.kill()
        proc.join(timeout=5)
    conn.close()


def raise_or_return(answer: Answer) -> tuple[int, int, float, tuple[Any, ...]]:
    """Turn a worker's answer back into (files, bytes, seconds, conversions) or the exception
    it raised."""
    kind = answer[0]
    if kind == "ok":
        return answer[1], answer[2], answer[3], answer[4]
    if kind == "unreachable":
        raise PacsUnreachable(answer[1])
    _, category, message, expected, received, *rest = answer
    raise StudyFailed(category, message, files_expected=expected, files_received=received,
                      conversions=rest[0] if rest else (None, None, None))  # fmt: skip


def _die_with_parent() -> None:
    """Linux: the kernel SIGKILLs this worker when the loader dies (even by SIGKILL), so no
    orphan keeps writing patient files into a dead run's folder. Best effort elsewhere."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes
        import ctypes.util
        import signal

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(0)


def _worker_main(conn: Connection, settings: Settings, registry: Path | None = None) -> None:
    """A worker's loop: one in-process Retriever (one association), one job at a time."""
    _die_with_parent()

    with AssociationRetriever(settings, registry) as r:
        while True:
            try:
                job = conn.recv()
            except (EOFError, OSError):
                return
            if job is None:
                return
            uid, dest, expected = job
            try:
                got = r.retrieve(uid, Path(dest), expected)
                answer: Answer = ("ok", got.files, got.bytes, got.seconds,
                                  (got.as_stored, got.converted, got.lossy_converted))  # fmt: skip
            except StudyFailed as e:
                answer = ("failed", e.reason_category, str(e),
                          e.files_expected, e.files_received, e.conversions)  # fmt: skip
            except (PacsUnreachable, ConfigError) as e:  # the whole run stops either way
                answer = ("unreachable", str(e))
            except Exception as e:  # anything else fails this study, never the worker
                answer = ("failed", "retrieve_failed", f"study {uid}: {type(e).__name__}: {e}",
                          expected, None)  # fmt: skip
            conn.send(answer)
