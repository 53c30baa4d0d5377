"""What a long command learns while another holds the warehouse goes to the journal (fsynced,
owner-only) and reaches the warehouse once, at the next write or the next command's start,
even when a replay was cut short."""

from __future__ import annotations

import multiprocessing as mp
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.clock import utcnow
from connectors.warehouse import journal, lock
from connectors.warehouse.lock import WarehouseLock
from connectors.warehouse.store import Warehouse


@pytest.fixture(autouse=True)
def _short_waits(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(journal, "JOURNAL_WAIT_SECONDS", 0.2)
    lock.set_wait(5)
    yield
    lock.set_wait(None)


def _hold(path: str, ready, release) -> None:  # type: ignore[no-untyped-def]
    held = WarehouseLock(Path(path))
    held.acquire("build")
    ready.set()
    release.wait(30)
    held.release()


def _attempt(n: int) -> dict[str, object]:
    now = utcnow()
    return {
        "run_id": "load-1",
        "loaded_at": now,
        "attempt_id": f"a{n}",
        "study_instance_uid": f"1.2.{n}",
        "subject_label": "S",
        "session_label": f"L{n}",
        "mode": "direct",
        "started_at": now,
        "finished_at": now,
        "outcome": "loaded",
        "bytes_transferred": 10**10 + n,
    }


def _attempt_ids(wh: Warehouse) -> list[str]:
    with wh.connect(read_only=True) as con:
        rows = con.execute("select attempt_id from raw.ingest_attempts order by 1").fetchall()
    return [r[0] for r in rows]


def test_rows_learned_while_busy_are_journaled_then_written_once(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path / "w" / "p.duckdb")
    wh.ensure()
    assert journal.append_or_journal(wh, {"ingest_attempts": [_attempt(1)]})
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold, args=(str(wh.path), ready, release))
    proc.start()
    try:
        assert ready.wait(30)
        assert not journal.append_or_journal(wh, {"ingest_attempts": [_attempt(2)]})
        assert not journal.append_or_journal(wh, {"ingest_attempts": [_attempt(3)]})
    finally:
        release.set()
        proc.join(30)
    path = journal.journal_path(wh.path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert len(path.read_text().splitlines()) == 2
    assert _attempt_ids(wh) == ["a1"]

    # The next write puts the journal's rows first, then its own; the journal is emptied.
    assert journal.append_or_journal(wh, {"ingest_attempts": [_attempt(4)]})
    assert _attempt_ids(wh) == ["a1", "a2", "a3", "a4"]
    assert not journal.pending(wh.path)
    with wh.connect(read_only=True) as con:
        kept = con.execute(
            "select bytes_transferred from raw.ingest_attempts where attempt_id = 'a3'"
        ).fetchone()
    assert kept == (10**10 + 3,)  # types survive the JSON round trip


def test_a_replay_cut_short_writes_nothing_twice(tmp_path: Path) -> None:
    """The entries reached the warehouse but the journal was not emptied (killed between
    the two): the next replay skips them by their entry ids."""
    wh = Warehouse(tmp_path / "p.duckdb")
    wh.ensure()
    journal.add(wh.path, {"ingest_attempts": [_attempt(1)]})
    journal.add(wh.path, {"ingest_attempts": [_attempt(2), _attempt(3)]})
    path = journal.journal_path(wh.path)
    saved = tmp_path / "saved.journal"
    shutil.copy(path, saved)
    assert journal.replay(wh) == 2
    shutil.copy(saved, path)  # as if killed before the truncation
    with path.open("ab") as f:
        f.write(b'{"entry_id": "cut-mid-wr')  # and a last line cut by the crash
    assert journal.replay(wh) == 0
    assert _attempt_ids(wh) == ["a1", "a2", "a3"]
    assert not journal.pending(wh.path)
    with wh.connect(read_only=True) as con:
        assert con.execute("select count(*) from raw.journal_entries").fetchone() == (2,)


def test_once_the_journal_holds_rows_a_write_tries_briefly_instead_of_waiting_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While another process holds the warehouse (an admin's builds one after another), the
    first row waits JOURNAL_WAIT_SECONDS and is journaled; the next ones, the journal not yet
    written, try for JOURNAL_RETRY_SECONDS only (the load is not slowed by a wait per row)."""
    waits: list[float] = []
    real = WarehouseLock.acquire

    def acquire(self: WarehouseLock, command: str, wait: float = 0.0) -> None:
        waits.append(wait)
        real(self, command, wait)

    monkeypatch.setattr(WarehouseLock, "acquire", acquire)
    monkeypatch.setattr(journal, "JOURNAL_WAIT_SECONDS", 0.5)  # the fixture's 0.2 is the retry's
    wh = Warehouse(tmp_path / "w" / "p.duckdb")
    wh.ensure()
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold, args=(str(wh.path), ready, release))
    proc.start()
    try:
        assert ready.wait(30)
        waits.clear()
        assert not journal.append_or_journal(wh, {"ingest_attempts": [_attempt(1)]})
        assert not journal.append_or_journal(wh, {"ingest_attempts": [_attempt(2)]})
    finally:
        release.set()
        proc.join(30)
    assert waits == [0.5, journal.JOURNAL_RETRY_SECONDS]
    assert journal.append_or_journal(wh, {"ingest_attempts": [_attempt(3)]})
    assert _attempt_ids(wh) == ["a1", "a2", "a3"]
