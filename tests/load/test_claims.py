"""Claims and association slots on a real PostgreSQL: a study held by one loader is BUSY for
another, a dead loader's claims expire with its session (SIGKILL), a study another loader has
loaded since this one read its manifest is DONE, and the PACS's associations are counted for
the whole team."""

from __future__ import annotations

import dataclasses
import datetime as dt
import multiprocessing as mp
import os
import signal
import threading
import time

from connectors.clock import utcnow
from connectors.config import PacsConfig, Settings, WarehouseConfig
from connectors.load.claims import BUSY, DONE, MINE, SharedClaims
from connectors.warehouse.postgres import PostgresWarehouse

UID = "1.2.826.0.1.3680043.10.1234.1"


def _settings(url: str, slots: int = 2) -> Settings:
    return dataclasses.replace(
        Settings(),
        warehouse=WarehouseConfig(url=url),
        pacs=PacsConfig(host="10.0.0.9", port=104, called_aet="PACS", max_associations=slots),
    )


def _hold(url: str, passfile: str, ready) -> None:  # type: ignore[no-untyped-def]
    os.environ["PGPASSFILE"] = passfile
    claims = SharedClaims(url, _settings(url), "run-a", utcnow())
    assert claims.claim(UID) == MINE
    ready.set()
    time.sleep(60)  # until killed


def test_a_claim_is_busy_for_others_and_expires_when_its_loader_dies(pg_url: str) -> None:
    PostgresWarehouse(pg_url).ensure()
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold, args=(pg_url, os.environ["PGPASSFILE"], ready), daemon=True)
    holder.start()
    try:
        assert ready.wait(60)
        other = SharedClaims(pg_url, _settings(pg_url), "run-b", utcnow())
        assert other.claim(UID) == BUSY
        assert holder.pid is not None
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(30)
        deadline = time.monotonic() + 30
        while other.claim(UID) != MINE:  # the server notices the closed session at once
            assert time.monotonic() < deadline, "a dead loader's claim never expired"
            time.sleep(0.1)
        other.release(UID)
        other.close()
    finally:
        if holder.is_alive():
            holder.kill()


def test_a_study_loaded_by_another_loader_meanwhile_is_done(pg_url: str) -> None:
    wh = PostgresWarehouse(pg_url)
    wh.ensure()
    since = utcnow() - dt.timedelta(seconds=1)
    now = utcnow()
    wh.append(
        "ingest_attempts",
        [
            {
                "run_id": "run-a",
                "loaded_at": now,
                "attempt_id": "a1",
                "study_instance_uid": UID,
                "mode": "direct",
                "started_at": now,
                "finished_at": now,
                "outcome": "loaded",
            }
        ],
    )
    mine = SharedClaims(pg_url, _settings(pg_url), "run-b", since)
    assert mine.claim(UID) == DONE
    assert mine.claim(UID + ".2") == MINE
    mine.close()
    # its own run's rows never make a study DONE for it
    own = SharedClaims(pg_url, _settings(pg_url), "run-a", since)
    assert own.claim(UID) == MINE
    own.close()


def test_associations_are_counted_for_the_whole_team(pg_url: str) -> None:
    PostgresWarehouse(pg_url).ensure()
    a = SharedClaims(pg_url, _settings(pg_url, slots=2), "run-a", utcnow())
    b = SharedClaims(pg_url, _settings(pg_url, slots=2), "run-b", utcnow())
    open_now, most = 0, 0
    lock = threading.Lock()

    def retrieve(claims: SharedClaims) -> None:
        nonlocal open_now, most
        with claims.association():
            with lock:
                open_now += 1
                most = max(most, open_now)
            time.sleep(0.3)
            with lock:
                open_now -= 1

    threads = [threading.Thread(target=retrieve, args=(c,)) for c in (a, a, b, b, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert most == 2  # five retrievals, two loaders, never more than the team's two
    a.close()
    b.close()


def test_a_loader_that_takes_its_slot_again_at_once_does_not_starve_another(pg_url: str) -> None:
    """A takes the PACS's only slot again the moment it frees it, study after study (as its
    retrieval loop does); B, waiting meanwhile, still gets the slot within a few of A's
    retrievals, and never both at once."""
    PostgresWarehouse(pg_url).ensure()
    a = SharedClaims(pg_url, _settings(pg_url, slots=1), "run-a", utcnow())
    b = SharedClaims(pg_url, _settings(pg_url, slots=1), "run-b", utcnow())
    stop = threading.Event()
    a_rounds, b_got_at, inside = [0], [-1], [0]

    def greedy() -> None:
        while not stop.is_set():
            with a.association():
                inside[0] += 1
                assert inside[0] == 1
                time.sleep(0.1)
                inside[0] -= 1
            a_rounds[0] += 1

    ta = threading.Thread(target=greedy)
    ta.start()
    try:
        time.sleep(0.3)  # A is looping
        with b.association():
            b_got_at[0] = a_rounds[0]
            inside[0] += 1
            assert inside[0] == 1
            inside[0] -= 1
    finally:
        stop.set()
        ta.join(30)
        a.close()
        b.close()
    assert 0 <= b_got_at[0] <= 6, b_got_at  # B waited a round or two, not until A stopped
