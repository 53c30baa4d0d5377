"""The writer lock: an exclusive ``flock`` on ``<warehouse>.lock``, held only for one short
transaction (an attempt row, a patient's studies, a sync page) or one dbt build, never for a
command's whole life, so the admin's commands and plain ``dbt build`` work while a load runs.

A command that finds the lock taken waits for it, up to ``--wait SECONDS`` (default
``DEFAULT_WAIT_SECONDS``; ``$PACS2XNAT_WAIT`` for plain ``dbt build``), saying who holds it
(command and pid) and how long it will wait; ``WarehouseBusy`` (exit 3) only when the wait runs
out. The lock file names the holder; the kernel drops the lock if the holder dies, even by
SIGKILL. Inside one process the lock is re-entrant and serialises threads (``holding``).

``role="load"`` is a second lock, ``<warehouse>.load.lock``, that one ``pacs2xnat load`` holds
for its whole life: one loader per DuckDB warehouse (its work folder is its own).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from connectors import console
from connectors.clock import utcnow
from connectors.errors import WarehouseBusy

logger = logging.getLogger(__name__)

DEFAULT_WAIT_SECONDS = 300.0
WAIT_ENV = "PACS2XNAT_WAIT"
#: First pause between two tries of a taken lock; doubles up to ``POLL_MAX``.
POLL_FIRST, POLL_MAX = 0.02, 0.25

_identity: dict[str, object] = {"command": "pacs2xnat", "wait": None}


def configure(*, command: str) -> None:
    """Name this process in the lock file (``load``, ``report`` …)."""
    _identity["command"] = command


def set_wait(seconds: float | None) -> None:
    """How long this process waits for a taken lock (``--wait``); None: the default."""
    _identity["wait"] = None if seconds is None else max(0.0, float(seconds))


def wait_seconds() -> float:
    """How long this process waits for a taken lock: ``--wait``, else ``$PACS2XNAT_WAIT``, else
    ``DEFAULT_WAIT_SECONDS``."""
    configured = _identity["wait"]
    if isinstance(configured, float):
        return configured
    with contextlib.suppress(ValueError):
        return max(0.0, float(os.environ.get(WAIT_ENV, "")))
    return DEFAULT_WAIT_SECONDS


def command_name() -> str:
    return str(_identity["command"])


class WarehouseLock:
    """An exclusive ``flock`` on ``<warehouse>.lock`` (or ``<warehouse>.<role>.lock``)."""

    def __init__(self, warehouse_path: Path, role: str = "") -> None:
        suffix = f".{role}.lock" if role else ".lock"
        self.warehouse_path = Path(warehouse_path)
        self.path = Path(str(warehouse_path) + suffix)
        self._fd: int | None = None

    def try_acquire(self, command: str) -> bool:
        """Take the lock if it is free; False (at once) if another process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        stamp = {
            "pid": os.getpid(),
            "command": command,
            "started": utcnow().isoformat(" ", "seconds"),
        }
        os.pwrite(fd, json.dumps(stamp).encode(), 0)
        self._fd = fd
        return True

    def holder(self) -> str:
        """Who holds the lock, as the lock file says: ``pacs2xnat load (pid 123, since …)``."""
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                info = json.loads(f.read(4096).strip())
            command = str(info["command"])
            name = command if command.startswith("dbt") else f"pacs2xnat {command}"
            return f"{name} (pid {info['pid']}, since {info['started']})"
        except (OSError, ValueError, KeyError, TypeError):
            return "another pacs2xnat"

    def acquire(self, command: str, wait: float = 0.0) -> None:
        """Take the lock, waiting up to ``wait`` seconds for its holder (saying who it is and
        how long we wait); ``WarehouseBusy`` naming the holder when the wait runs out."""
        if self.try_acquire(command):
            return
        deadline = time.monotonic() + wait
        who = self.holder()
        if wait > 0:
            message = f"warehouse in use by {who}; waiting up to {wait:.0f} s for it (--wait)"
            logger.info("%s", message)
            console.say(message)
        pause = POLL_FIRST
        while time.monotonic() < deadline:
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            if self.try_acquire(command):
                return
            who = self.holder()
            pause = min(pause * 2, POLL_MAX)
        what = "the load lock of" if self.path.name.endswith(".load.lock") else ""
        raise WarehouseBusy(
            f"warehouse busy: {who} is using {what + ' ' if what else ''}{self.warehouse_path}"
            f" and did not let go within {wait:.0f} s; try again later or with a longer --wait"
        )

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> WarehouseLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass
class _Hold:
    """This process's hold on one warehouse's lock: threads take turns (``turn``), the
    outermost ``holding`` takes the flock and the last one out lets it go."""

    turn: threading.RLock
    lock: WarehouseLock
    depth: int = 0
    forever: bool = False


_holds: dict[str, _Hold] = {}
_holds_guard = threading.Lock()


def _hold_for(warehouse_path: Path) -> _Hold:
    key = str(Path(warehouse_path).resolve())
    with _holds_guard:
        if key not in _holds:
            _holds[key] = _Hold(threading.RLock(), WarehouseLock(Path(key)))
        return _holds[key]


@contextlib.contextmanager
def holding(warehouse_path: Path, wait: float | None = None) -> Iterator[None]:
    """Hold the warehouse lock for one short transaction or one dbt build: re-entrant in a
    thread, threads of this process take turns, other processes wait (bounded)."""
    hold = _hold_for(warehouse_path)
    limit = wait_seconds() if wait is None else wait
    if not hold.turn.acquire(timeout=max(limit, 0.0)):
        raise WarehouseBusy(
            f"warehouse busy: another thread of this process held {warehouse_path} "
            f"for more than {limit:.0f} s"
        )
    try:
        if hold.depth == 0 and not hold.forever:
            hold.lock.acquire(command_name(), wait=limit)
        hold.depth += 1
        try:
            yield
        finally:
            hold.depth -= 1
            if hold.depth == 0 and not hold.forever:
                hold.lock.release()
    finally:
        hold.turn.release()


def held_here(warehouse_path: Path) -> bool:
    """Whether this process holds the warehouse lock now (any thread)."""
    hold = _hold_for(warehouse_path)
    return hold.forever or hold.depth > 0


def hold_until_exit(warehouse_path: Path, command: str) -> None:
    """Take the lock for the rest of this process (plain ``dbt build`` through the dbt-duckdb
    plugin: the kernel lets go when dbt exits), unless this process already holds it."""
    hold = _hold_for(warehouse_path)
    with _holds_guard:
        if hold.forever or hold.depth > 0:
            return
        hold.lock.acquire(command, wait=wait_seconds())
        hold.forever = True


@contextlib.contextmanager
def one_loader(warehouse_path: Path, command: str) -> Iterator[None]:
    """The load lock (``role="load"``) for a loader's whole life: a second loader on the same
    DuckDB warehouse waits (bounded) for the first one to finish, then exits 3."""
    lock = WarehouseLock(warehouse_path, role="load")
    lock.acquire(command, wait=wait_seconds())
    try:
        yield
    finally:
        lock.release()


__all__ = [
    "DEFAULT_WAIT_SECONDS",
    "WAIT_ENV",
    "WarehouseLock",
    "configure",
    "held_here",
    "hold_until_exit",
    "holding",
    "one_loader",
    "set_wait",
    "wait_seconds",
]
