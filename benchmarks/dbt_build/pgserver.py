"""The PostgreSQL server's share of a measurement (Linux ``/proc``): CPU seconds the postmaster
and its backends used between ``begin()`` and ``end()``, and their peak memory, sampled.

Memory is the sum of PSS (``/proc/<pid>/smaps_rollup``: shared buffers split between the
processes that map them, not counted once per backend) over the postmaster and its children,
sampled every ``interval`` seconds in a thread; CPU is the postmaster's own and reaped children's
(``cutime``/``cstime``: backends that ended) plus the live children's.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    """Fields of ``/proc/<pid>/stat`` after the command name (field 3 is index 0)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _children(parent: int) -> list[int]:
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int(_stat(int(entry.name))[1]) == parent:
                    out.append(int(entry.name))
    return out


def _pss_kb(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


class ServerMeter:
    """CPU and peak PSS of the PostgreSQL server whose data folder is ``data_dir``."""

    def __init__(self, data_dir: Path, interval: float = 0.2) -> None:
        self.postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
        self.interval = interval
        self.peak_mb = 0.0
        self._cpu0 = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def cpu_seconds(self) -> float:
        f = _stat(self.postmaster)
        ticks = sum(int(x) for x in f[11:15])  # utime, stime, cutime, cstime
        for child in _children(self.postmaster):
            with contextlib.suppress(OSError, IndexError):
                ticks += sum(int(x) for x in _stat(child)[11:13])
        return ticks / TICK

    def _sample(self) -> None:
        while not self._stop.is_set():
            pids = [self.postmaster, *_children(self.postmaster)]
            self.peak_mb = max(self.peak_mb, sum(_pss_kb(p) for p in pids) / 1024)
            self._stop.wait(self.interval)

    def begin(self) -> None:
        self._cpu0 = self.cpu_seconds()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def end(self) -> tuple[float, float]:
        """(server CPU seconds since ``begin``, peak PSS MB)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.cpu_seconds() - self._cpu0, self.peak_mb
