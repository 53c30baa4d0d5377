"""The cycle's "today", UTC timestamps, and the injectable ``Clock`` (local now, sleep).

The cycle's "today". ``PACS2XNAT_TODAY=YYYY-MM-DD`` pins it (the demo's "three months
later" cycle, tests); otherwise it is the local date. dbt sees a pinned day as ``var('today')``;
otherwise its SQL reads ``current_date``, and ``builds.dbt_vars`` pins this date for a build
when the warehouse's date is another.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import time
from collections.abc import Iterator

from connectors.errors import ConfigError

TODAY_ENV = "PACS2XNAT_TODAY"


def today() -> dt.date:
    pinned = os.environ.get(TODAY_ENV, "").strip()
    if not pinned:
        return dt.date.today()
    try:
        return dt.date.fromisoformat(pinned)
    except ValueError:
        raise ConfigError(f"${TODAY_ENV} = {pinned!r}: not a date (YYYY-MM-DD)") from None


def is_pinned() -> bool:
    return bool(os.environ.get(TODAY_ENV, "").strip())


def utcnow() -> dt.datetime:
    """Naive UTC timestamp, the form every ``*_at`` column holds."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Clock:
    """Wall-clock time and waiting, in one injectable place: the PACS windows
    (``connectors/windows.py``) and the throttles ask it, so tests move time without sleeping."""

    def now(self) -> dt.datetime:
        """Naive local time (the ``[pacs] windows`` are local)."""
        return dt.datetime.now()

    def monotonic(self) -> float:
        """Seconds for measuring intervals (rate caps, pauses)."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


_clock: list[Clock] = [Clock()]


def clock() -> Clock:
    """The clock in use (the system's unless a test put another with ``use_clock``)."""
    return _clock[-1]


@contextlib.contextmanager
def use_clock(c: Clock) -> Iterator[Clock]:
    """Run with another clock (tests: a fake one whose ``sleep`` only moves its time)."""
    _clock.append(c)
    try:
        yield c
    finally:
        _clock.remove(c)
