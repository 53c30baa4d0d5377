"""A clock for tests: ``now`` moves ``step`` forward on every call, ``sleep`` only moves it.

Put in place with ``connectors.clock.use_clock``; nothing in a test using it ever sleeps."""

from __future__ import annotations

import datetime as dt
import threading

from connectors.clock import Clock


class FakeClock(Clock):
    def __init__(self, start: dt.datetime, step: dt.timedelta = dt.timedelta()) -> None:
        self.t = start
        self.step = step
        self.slept = 0.0
        self._lock = threading.Lock()

    def now(self) -> dt.datetime:
        with self._lock:
            t = self.t
            self.t += self.step
            return t

    def monotonic(self) -> float:
        with self._lock:
            return (self.t - dt.datetime(2000, 1, 1)).total_seconds()

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.slept += max(seconds, 0.0)
            self.t += dt.timedelta(seconds=max(seconds, 0.0))
