"""``pacs2xnat`` with the time it spent waiting for the warehouse written to a JSON file:

    BENCH_WAIT_OUT=waits.json python benchmarks/admin_wait/timed_cli.py --config … report

Waiting for the warehouse is time spent in ``WarehouseLock.acquire`` (the writer lock of the
DuckDB file, ``connectors/warehouse/lock.py``: it returns at once when the lock is free, else
polls from 20 ms up), wrapped here in the measured process only; the connectors are not
changed. (Every pacs2xnat process takes that lock before it opens the file, so DuckDB's own
file lock never makes one of them wait.) Written at exit:
``{"waited": s, "waits": n, "longest": s, "acquires": n}``, ``waits`` counting acquisitions
whose first try found the lock held by another process.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import runpy
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from connectors.warehouse import lock

_seen: dict[str, Any] = {"waited": 0.0, "waits": 0, "longest": 0.0, "acquires": 0}
_refused = [0]  # tries of the lock that found it taken, in this process


def _counted_try(fn: Callable[..., bool]) -> Callable[..., bool]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> bool:
        got = fn(*args, **kwargs)
        if not got:
            _refused[0] += 1
        return got

    return wrapper


def _timed(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Time one ``acquire``; a wait is one whose first try found the lock taken (on a loaded
    machine an uncontended acquire can take milliseconds: that is not waiting)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started, refused = time.monotonic(), _refused[0]
        try:
            return fn(*args, **kwargs)
        finally:
            took = time.monotonic() - started
            _seen["acquires"] += 1
            if _refused[0] > refused:
                _seen["waited"] += took
                _seen["waits"] += 1
                _seen["longest"] = max(_seen["longest"], took)

    return wrapper


def _write() -> None:
    out = os.environ.get("BENCH_WAIT_OUT")
    if out:
        Path(out).write_text(json.dumps(_seen), encoding="utf-8")


lock.WarehouseLock.try_acquire = _counted_try(lock.WarehouseLock.try_acquire)  # type: ignore[method-assign]
lock.WarehouseLock.acquire = _timed(lock.WarehouseLock.acquire)  # type: ignore[method-assign]
atexit.register(_write)
sys.argv[0] = "pacs2xnat"
runpy.run_module("connectors.app.cli", run_name="__main__", alter_sys=True)
