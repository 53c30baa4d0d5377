"""When the PACS may be asked: ``[pacs] windows`` and the gate every query and load passes.

``windows = ["Mon-Fri 19:00-07:00", "Sat-Sun 00:00-24:00"]``: each entry is days (``Mon``,
``Mon-Fri``, ``Fri-Mon``, ``Mon,Wed``) and a time-of-day range on those days, local time. A
range that ends before it starts covers the two ends of the day: ``Mon-Fri 19:00-07:00`` is
before 07:00 and from 19:00 on, Monday to Friday (so with the weekend entry every night and
the whole weekend are open). No entries (the default): always open.

``WindowGate.admit()`` is asked before each patient's C-FIND and before each study's retrieval;
``closed_now()`` after each instance of a study in hand over WADO-RS or pynetdicom C-GET and
C-MOVE (in threads when windows are configured), and every 0.2 s while dcmtk's getscu runs: at
a window's end the instance in flight finishes (getscu: is ended, the instances it answered
kept), what arrived stays, and the study continues with only the rest after the pause
(``pacs/retrieve/resume.py``; with the dcmtk back end's C-MOVE the study in hand finishes).
Outside a window it waits for the next one (the clock's ``sleep``, so tests never sleep) or,
with ``wait=False`` (``--no-wait``), says no; the caller stops starting work, and a rerun
continues with what is left (the query plan's ``is_due``, the manifest without what XNAT
holds, a paused study's folder: ``load/kept.py``), so nothing is asked or retrieved twice.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from connectors import console
from connectors.clock import Clock, clock
from connectors.errors import ConfigError

logger = logging.getLogger(__name__)

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_ENTRY = re.compile(
    r"^\s*(?P<days>[A-Za-z,\-\s]+?)\s+(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})\s*$"
)
DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class WindowEntry:
    """One entry: weekdays (0 = Monday) and a time-of-day range, in minutes since midnight."""

    days: frozenset[int]
    start: int
    end: int

    def spans(self, day: dt.date) -> list[tuple[dt.datetime, dt.datetime]]:
        """The open intervals this entry gives on ``day`` (none if not one of its days)."""
        if day.weekday() not in self.days:
            return []
        midnight = dt.datetime.combine(day, dt.time())
        at = [midnight + dt.timedelta(minutes=m) for m in (self.start, self.end)]
        if self.start < self.end:
            return [(at[0], at[1])]
        return [(midnight, at[1]), (at[0], midnight + DAY)]


@dataclass(frozen=True)
class Windows:
    """The configured windows; empty means always open."""

    entries: tuple[WindowEntry, ...] = ()
    text: tuple[str, ...] = ()

    @property
    def always_open(self) -> bool:
        return not self.entries

    def intervals(self, around: dt.datetime) -> list[tuple[dt.datetime, dt.datetime]]:
        """Merged open intervals from the day before ``around`` to eight days after."""
        spans = sorted(
            s for k in range(-1, 9) for w in self.entries for s in w.spans(around.date() + k * DAY)
        )
        merged: list[tuple[dt.datetime, dt.datetime]] = []
        for a, b in spans:
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
            else:
                merged.append((a, b))
        return merged

    def open_at(self, now: dt.datetime) -> bool:
        return self.always_open or any(a <= now < b for a, b in self.intervals(now))

    def next_open(self, now: dt.datetime) -> dt.datetime:
        """When the next window opens (``now`` itself when one is open)."""
        if self.open_at(now):
            return now
        return min(a for a, _ in self.intervals(now) if a > now)

    def closes_at(self, now: dt.datetime) -> dt.datetime | None:
        """When the window open at ``now`` ends (None: always open, or closed now)."""
        for a, b in self.intervals(now):
            if a <= now < b:
                return b
        return None


def parse_windows(values: Sequence[str], where: str = "config") -> Windows:
    """``[pacs] windows`` validated; a ``ConfigError`` naming the key and the entry."""
    entries = []
    for text in values:
        entries.append(_parse_entry(text, where))
    return Windows(tuple(entries), tuple(values))


def _parse_entry(text: str, where: str) -> WindowEntry:
    def bad(why: str) -> ConfigError:
        return ConfigError(
            f"{where}: [pacs] windows entry {text!r}: {why} "
            '(write e.g. "Mon-Fri 19:00-07:00" or "Sat-Sun 00:00-24:00", local time)'
        )

    m = _ENTRY.match(text)
    if m is None:
        raise bad("not 'DAYS HH:MM-HH:MM'")
    days: set[int] = set()
    for part in m["days"].replace(" ", "").lower().split(","):
        ends = part.split("-")
        if len(ends) > 2 or any(e[:3] not in DAYS or len(e) < 3 for e in ends):
            raise bad(f"{part!r} is not a day or a range of days (Mon..Sun)")
        first, last = DAYS.index(ends[0][:3]), DAYS.index(ends[-1][:3])
        days.update((first + k) % 7 for k in range((last - first) % 7 + 1))
    start, end = _minutes(m["start"]), _minutes(m["end"])
    if start is None or end is None or start == 24 * 60:
        raise bad("times run from 00:00 to 24:00")
    if start == end:
        raise bad("the window is empty (00:00-24:00 is the whole day)")
    return WindowEntry(frozenset(days), start, end)


def _minutes(hhmm: str) -> int | None:
    h, m = (int(x) for x in hhmm.split(":"))
    if m >= 60 or h > 24 or (h == 24 and m):
        return None
    return h * 60 + m


@dataclass
class WindowGate:
    """Asked before each unit of PACS work; waits for the next window, or says no (no-wait).

    Thread-safe: the first worker to find the window closed waits for it; the others wait
    behind it. ``pauses`` holds every pause (for the summary and the notifications);
    ``on_pause`` lets the progress display show it.
    """

    windows: Windows
    wait: bool = True
    clock: Clock = field(default_factory=clock)
    on_pause: Callable[[dt.datetime], None] | None = None
    on_resume: Callable[[], None] | None = None
    pauses: list[dict[str, str]] = field(default_factory=list)
    paused_until: dt.datetime | None = None  # set when the gate said no (no-wait)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def admit(self) -> bool:
        """True: go ahead now (after waiting if need be). False: stopped outside a window."""
        if self.windows.always_open:
            return True
        with self._lock:
            if self.paused_until is not None:
                return False
            now = self.clock.now()
            if self.windows.open_at(now):
                return True
            until = self.windows.next_open(now)
            self.pauses.append({"at": now.isoformat(timespec="minutes"),
                                "until": until.isoformat(timespec="minutes")})  # fmt: skip
            logger.warning(
                "outside the PACS windows (%s): paused until %s%s",
                "; ".join(self.windows.text),
                until.isoformat(sep=" ", timespec="minutes"),
                "" if self.wait else " (--no-wait: stopping here; rerun to continue)",
            )
            _announce(until, self.wait)
            for listener in list(_listeners):  # the notifications (outputs/notify.py)
                listener(until, self.wait)
            if self.on_pause is not None:
                self.on_pause(until)
            if not self.wait:
                self.paused_until = until
                return False
            while (now := self.clock.now()) < until:
                self.clock.sleep((until - now).total_seconds())
            logger.warning("a PACS window opened: resuming")
            if self.on_resume is not None:
                self.on_resume()
            return True

    def closed_now(self) -> bool:
        """Whether a window has ended (asked after each instance of a study in hand: the
        retrieval stops there, ``pacs/retrieve/resume.py``); never with no windows."""
        return not self.windows.always_open and not self.windows.open_at(self.clock.now())

    def summary(self) -> dict[str, object]:
        """What a run's summary says of the windows (nothing when none are configured)."""
        if self.windows.always_open:
            return {}
        out: dict[str, object] = {"pauses": list(self.pauses)}
        if self.paused_until is not None:
            out["paused_until"] = self.paused_until.isoformat(timespec="minutes")
        return out


_listeners: list[Callable[[dt.datetime, bool], None]] = []


@contextlib.contextmanager
def listening(fn: Callable[[dt.datetime, bool], None]) -> Iterator[None]:
    """Call ``fn(until, wait)`` on every pause while the block runs (one command's notifier)."""
    _listeners.append(fn)
    try:
        yield
    finally:
        _listeners.remove(fn)


def _announce(until: dt.datetime, wait: bool) -> None:
    """The person sees the pause on stderr; under ``--json`` as one JSON line there."""
    when = until.isoformat(sep=" ", timespec="minutes")
    if console.json_mode():
        console.err.print_json(json.dumps({"event": "paused", "paused_until": when}))
    else:
        console.say(
            f"outside the PACS windows: paused until {when}"
            + ("" if wait else " (--no-wait: stopping)")
        )


def gate_for(values: Sequence[str], *, wait: bool = True) -> WindowGate:
    return WindowGate(parse_windows(values), wait=wait, clock=clock())
