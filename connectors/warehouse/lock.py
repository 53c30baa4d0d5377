"""One writer at a time: an exclusive ``flock`` on ``<warehouse>.lock`` for one CLI invocation."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path

from connectors.clock import utcnow
from connectors.errors import WarehouseBusy


class WarehouseLock:
    """An exclusive, non-blocking ``flock`` on ``<warehouse>.lock`` held for one CLI invocation.

    The lock file names the holder (pid, command, start time) so the second invocation's
    error says who has it. The kernel drops the lock if the holder dies, even by SIGKILL.
    """

    def __init__(self, warehouse_path: Path) -> None:
        self.path = Path(str(warehouse_path) + ".lock")
        self._fd: int | None = None

    def acquire(self, command: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
            os.close(fd)
            try:
                info = json.loads(holder)
                who = f"pacs2xnat {info['command']} (pid {info['pid']}, since {info['started']})"
            except (ValueError, KeyError):
                who = "another pacs2xnat"
            raise WarehouseBusy(
                f"warehouse busy: {who} is using {self.path.with_suffix('')}; "
                "wait for it to finish (one writer at a time)"
            ) from None
        os.ftruncate(fd, 0)
        stamp = {
            "pid": os.getpid(),
            "command": command,
            "started": utcnow().isoformat(" ", "seconds"),
        }
        os.pwrite(fd, json.dumps(stamp).encode(), 0)
        self._fd = fd

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
