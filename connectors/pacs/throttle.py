"""How hard the loader may pull from the PACS: fixed caps and a back-off that listens.

Every retrieval takes a slot (``Throttle.slot``) and reports how it went (``answered``,
``refused``):

- ``max_associations`` slots at most, as always; ``max_studies_per_hour`` spaces the starts;
  ``max_mb_per_second`` delays the next start until the bytes retrieved so far fit the cap
  (averaged over whole studies). 0 switches a cap off (the default).
- ``adaptive`` (default on): when the PACS answers a study well above its running median
  time per instance (``SLOW_FACTOR``, and at least ``SLOW_FLOOR_SECONDS``), or refuses
  (0xA700, 0xA702, a rejected association), one slot fewer; with one slot left, a pause of
  ``backoff_pause_seconds``. After ``RECOVER_AFTER`` studies in a row answered normally, one
  slot more, up to ``max_associations``. Each change is logged and kept in ``changes`` (the
  summary, the notifications). Studies already in flight when the throttle reacted do not
  count again (``Ticket.generation``). A PACS that keeps up never triggers it: it keeps every
  configured association.

Waiting uses the injectable clock (``connectors.clock``): tests move time without sleeping.
"""

from __future__ import annotations

import contextlib
import logging
import re
import statistics
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from connectors.clock import Clock, clock
from connectors.config import PacsConfig

logger = logging.getLogger(__name__)

SLOW_FACTOR = 3.0  # an answer this many times the running median per instance is "slow"
SLOW_FLOOR_SECONDS = 2.0  # ... and a study that took at least this long (not scheduling noise)
MIN_SAMPLES = 5  # answers needed before the median means anything
SAMPLES = 50  # the running window
RECOVER_AFTER = 5  # normal answers in a row before one more association
REFUSALS_PER_STUDY = 10  # a study refused more often than this fails as usual
_REFUSAL = re.compile(
    r"status 0x(A700|A702)\b|rejected the association|aborted the association|HTTP (429|503)\b"
)


def is_refusal(message: str) -> bool:
    """Out of resources (0xA700), unable to perform sub-operations (0xA702), the PACS
    rejecting or dropping our association request, or (DICOMweb) HTTP 429/503: the PACS is
    there but busy."""
    return _REFUSAL.search(message) is not None


def refusal_reason(message: str) -> str:
    """The refusal without the study's identifiers (the reason goes into notifications)."""
    m = _REFUSAL.search(message)
    return "refused" if m is None else m.group(0)


@dataclass(frozen=True)
class Ticket:
    """A granted slot: the throttle's generation when the study started."""

    generation: int


class Throttle:
    """Shared by the retrieval threads of one load; thread-safe."""

    def __init__(self, pacs: PacsConfig, clock_: Clock | None = None) -> None:
        self.pacs = pacs
        self.clock = clock_ or clock()
        self.maximum = pacs.max_associations
        self.limit = pacs.max_associations
        self.in_use = 0
        self.peak = 0
        self.generation = 0
        self.changes: list[dict[str, object]] = []
        self.answered_ok = 0
        self._samples: deque[float] = deque(maxlen=SAMPLES)
        self._streak = 0
        self._resume_at = 0.0
        self._last_start: float | None = None
        self._t0: float | None = None
        self._bytes = 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def slot(self) -> Iterator[Ticket]:
        """Wait for a free slot within the current limit, the pause and the rate caps."""
        ticket = self._acquire()
        try:
            yield ticket
        finally:
            with self._cond:
                self.in_use -= 1
                self._cond.notify_all()

    def _acquire(self) -> Ticket:
        while True:
            with self._cond:
                while self.in_use >= self.limit:
                    self._cond.wait(0.5)
                now = self.clock.monotonic()
                wait = self._not_before() - now
                if wait <= 0:
                    self.in_use += 1
                    self.peak = max(self.peak, self.in_use)
                    self._last_start = now
                    if self._t0 is None:
                        self._t0 = now
                    return Ticket(self.generation)
            self.clock.sleep(wait)

    def _not_before(self) -> float:
        """The earliest start the pause and the caps allow (under the lock)."""
        t = self._resume_at
        per_hour = self.pacs.max_studies_per_hour
        if per_hour and self._last_start is not None:
            t = max(t, self._last_start + 3600.0 / per_hour)
        mbps = self.pacs.max_mb_per_second
        if mbps and self._t0 is not None:
            t = max(t, self._t0 + self._bytes / (mbps * 1e6))
        return t

    def answered(self, ticket: Ticket, seconds: float, files: int, nbytes: int) -> None:
        """A study came back whole: count its bytes, compare its pace with the median."""
        per_file = seconds / max(files, 1)
        with self._cond:
            self._bytes += nbytes
            self.answered_ok += 1
            median = statistics.median(self._samples) if len(self._samples) >= MIN_SAMPLES else 0
            self._samples.append(per_file)
            logger.debug("answer: %.3f s, %d files, median %.4f s a file", seconds, files, median)
            if not self.pacs.adaptive:
                return
            if median and per_file > SLOW_FACTOR * median and seconds >= SLOW_FLOOR_SECONDS:
                if ticket.generation == self.generation:
                    self._back_off(
                        f"the PACS answered in {per_file:.3f} s an instance, "
                        f"{per_file / median:.1f}x its running median ({median:.3f} s)"
                    )
                return
            self._streak += 1
            if self._streak >= RECOVER_AFTER and self.limit < self.maximum:
                self._change(self.limit + 1, "the PACS keeps up again: recovering")
                self._streak = 0

    def refused(self, ticket: Ticket | None, message: str) -> None:
        """The PACS refused a study or an association (``is_refusal``)."""
        if not self.pacs.adaptive:
            return
        with self._cond:
            if ticket is None or ticket.generation == self.generation:
                self._back_off(f"the PACS refused: {refusal_reason(message)}")

    def _back_off(self, reason: str) -> None:
        self._streak = 0
        if self.limit > 1:
            self._change(self.limit - 1, f"backing off ({reason})")
            return
        pause = self.pacs.backoff_pause_seconds
        self._resume_at = self.clock.monotonic() + pause
        self.generation += 1
        self.changes.append({"associations": 1, "pause_seconds": pause, "reason": reason})
        logger.warning("PACS throttle: pausing %g s with 1 association (%s)", pause, reason)

    def _change(self, limit: int, reason: str) -> None:
        self.limit = limit
        self.generation += 1
        self.changes.append({"associations": limit, "reason": reason})
        logger.warning("PACS throttle: %d association(s) (%s)", limit, reason)
        self._cond.notify_all()

    def summary(self) -> dict[str, object]:
        """For the load's summary: the peak of associations in use and every change."""
        return {"associations_peak": self.peak, "throttle_changes": list(self.changes)}
