"""The in-process demo PACS, made busy: ``fault(k) -> (seconds, status)`` for its k-th C-GET
(wait that long before answering, then refuse with ``status`` if not None, e.g. 0xA700), and
``peak`` is the most C-GETs it ever served at once (what "all configured associations" means
on the PACS's side)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pynetdicom import evt

from connectors.testbed.pacs_scp import DemoPacs

Fault = Callable[[int], tuple[float, int | None]]


class BusyPacs(DemoPacs):
    def __init__(self, folder: Path, fault: Fault | None = None, **kwargs: Any) -> None:
        super().__init__(folder, **kwargs)
        self.fault = fault
        self.active = 0
        self.peak = 0
        self.answered: list[int | None] = []  # the refusal status of each C-GET (None: served)
        self._count = 0
        self._busy_lock = threading.Lock()

    def _handle_get(self, event: evt.Event) -> Iterator[Any]:
        with self._busy_lock:
            k, self._count = self._count, self._count + 1
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            delay, status = self.fault(k) if self.fault else (0.0, None)
            if delay:
                time.sleep(delay)
            with self._busy_lock:
                self.answered.append(status)
            if status is None:
                yield from super()._handle_get(event)
                return
            self._record("C-GET", event)
            yield 1
            yield status, None
        finally:
            with self._busy_lock:
                self.active -= 1
