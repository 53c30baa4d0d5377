"""One query worker's patients through dcmtk's findscu (``[pacs] query_backend = "dcmtk"``).

The worker hands out batches (``query.py``); each goes to one findscu association
(``find_dcmtk.FindscuRun``). The next batch's findscu starts as soon as the previous one has
ended, and the previous batch is read while it runs, so the PACS is not idle while we decode.
An answer that is capped (to be split), cut short or transiently refused is asked again over
pynetdicom by the worker's own ``ask`` (its splitting and retries), only once the running
findscu has ended, and that association is then released: a worker never holds two.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from connectors.clock import utcnow
from connectors.config import PacsConfig
from connectors.errors import PacsUnreachable, QueryFailed
from connectors.pacs.find import (
    FindResult,
    check_mrn,
    is_capped,
    judge_final,
    study_query,
    unique_studies,
)
from connectors.pacs.find_dcmtk import Answer, FindscuRun
from connectors.pacs.query_record import PatientOutcome, PlannedQuery

logger = logging.getLogger(__name__)


@dataclass
class SentBatch:
    """A batch handed to findscu: its tasks, when, which were asked (by index; an MRN with a
    wildcard is not), the outcomes known so far and the run."""

    tasks: list[PlannedQuery]
    started: dt.datetime
    asked: list[int] = field(default_factory=list)
    outcomes: dict[int, PatientOutcome] = field(default_factory=dict)
    run: FindscuRun | None = None

    def wait(self) -> None:
        if self.run is not None:
            self.run.wait()

    def close(self) -> None:
        if self.run is not None:
            self.run.close()


class FindscuStream:
    """``tool`` (findscu) for the batches; ``ask`` and ``release`` the worker's pynetdicom
    asking of one patient and the release of its association."""

    def __init__(
        self,
        tool: str,
        pacs: PacsConfig,
        ask: Callable[[PlannedQuery], PatientOutcome],
        release: Callable[[], None],
    ) -> None:
        self.tool = tool
        self.pacs = pacs
        self.ask = ask
        self.release = release

    def stream(
        self, next_batch: Callable[[], list[PlannedQuery]], pausing: Callable[[], bool]
    ) -> Iterator[PatientOutcome]:
        """Every outcome of the batches ``next_batch`` hands out until it hands out none; when
        ``pausing()`` (a window's end, a stop) the batch in hand is read before another is asked
        for, so nothing waits unwritten."""
        ahead: SentBatch | None = None
        try:
            while True:
                if ahead is not None and pausing():
                    yield from self._read(ahead, None)
                    ahead = None
                batch = next_batch()
                if ahead is not None:
                    ahead.wait()  # its association has ended before the next one opens
                sent = self._send(batch) if batch else None
                if ahead is not None:
                    done, ahead = ahead, None
                    yield from self._read(done, sent)
                if sent is None:
                    return
                ahead = sent
        finally:
            if ahead is not None:
                ahead.close()

    def _send(self, tasks: list[PlannedQuery]) -> SentBatch:
        sent = SentBatch(tasks, utcnow())
        for i, t in enumerate(tasks):
            try:
                check_mrn(t.mrn)
                sent.asked.append(i)
            except QueryFailed as e:
                sent.outcomes[i] = PatientOutcome(t, sent.started, utcnow(), error=e)
        if sent.asked:
            queries = [study_query(tasks[i].mrn, tasks[i].window) for i in sent.asked]
            sent.run = FindscuRun(self.tool, self.pacs, queries)
        return sent

    def _read(self, sent: SentBatch, running: SentBatch | None) -> Iterator[PatientOutcome]:
        """A sent batch's outcomes, in order; what must be asked again is asked once
        ``running``'s findscu has ended."""
        tasks = sent.tasks
        try:
            answers = sent.run.answers() if sent.run is not None else []
        except PacsUnreachable:  # asked again one by one, with ask's retries and backoff
            answers = [Answer() for _ in sent.asked]
        finished = utcnow()
        again: list[int] = []
        for i, answer in zip(sent.asked, answers, strict=True):
            try:
                final = judge_final(answer.final)
            except QueryFailed as e:
                if e.transient:
                    again.append(i)
                else:
                    sent.outcomes[i] = PatientOutcome(tasks[i], sent.started, finished, error=e)
                continue
            if is_capped(final, len(answer.rows), self.pacs.find_result_cap):
                again.append(i)
                continue
            found = FindResult(list(unique_studies(answer.rows).values()), 1)
            sent.outcomes[i] = PatientOutcome(tasks[i], sent.started, finished, result=found)
        if again:
            logger.info("%d of %d patients asked again over pynetdicom", len(again), len(tasks))
            if running is not None:
                running.wait()
            try:
                for i in again:
                    sent.outcomes[i] = self.ask(tasks[i])
            finally:
                self.release()
        for i in range(len(tasks)):
            yield sent.outcomes[i]


__all__ = ["FindscuStream", "SentBatch"]
