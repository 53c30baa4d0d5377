"""Several loaders on one PostgreSQL warehouse: each study is claimed before it is retrieved,
and ``[pacs] max_associations`` counts the associations of the whole team, per PACS.

Both are PostgreSQL session-level advisory locks on one connection per loader: a study's
claim is ``pg_try_advisory_lock`` on a 64-bit hash of its Study UID (held until its final
attempt row is written), an association is one of the locks numbered 1..N in the PACS's own
key space (``host:port:AE``), held while a retrieval runs. A loader that dies loses its
connection and with it every lock: its claims expire at once on a crash or SIGKILL, and
within a minute when its machine vanishes (the session's TCP keepalives). On the DuckDB file
(one writer at a time) nothing is shared and every call is a no-op.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from connectors.config import Settings

logger = logging.getLogger(__name__)

#: the (int4, int4) advisory key space of association slots: classid = hash of the PACS
SLOT_SPACE = "pacs2xnat association slots"
POLL_SECONDS = 0.2
KEEPALIVES = "-c tcp_keepalives_idle=20 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=4"


MINE, BUSY, DONE = "mine", "busy", "done"


class Claims:
    """No one else to share with: the DuckDB warehouse (the writer lock keeps loaders apart)."""

    shared = False

    def claim(self, study_instance_uid: str) -> str:
        """``MINE`` (retrieve it now), ``BUSY`` (another loader holds it: ask again later) or
        ``DONE`` (another loader has loaded it since this one read its manifest)."""
        return MINE

    def release(self, study_instance_uid: str) -> None:
        return None

    @contextlib.contextmanager
    def association(self) -> Iterator[None]:
        yield

    def close(self) -> None:
        return None


class SharedClaims(Claims):
    """Claims and association slots on the shared PostgreSQL warehouse."""

    shared = True

    def __init__(self, url: str, settings: Settings, run_id: str, since: dt.datetime) -> None:
        import psycopg

        self._con: Any = psycopg.connect(url, autocommit=True, options=KEEPALIVES)
        self._lock = threading.Lock()  # one connection, many retrieval threads
        self.run_id = run_id
        self.since = since
        pacs = settings.pacs
        self.slots = pacs.max_associations
        self._pacs_key = f"{SLOT_SPACE} {pacs.host}:{pacs.port}:{pacs.called_aet}"
        self._held_slots: set[int] = set()
        self._claimed: set[str] = set()

    def _one(self, sql: str, params: list[Any]) -> Any:
        with self._lock:
            row = self._con.execute(sql, params).fetchone()
        return row[0] if row else None

    def claim(self, study_instance_uid: str) -> str:
        if study_instance_uid in self._claimed:  # advisory locks nest: never take one twice
            return MINE
        got = self._one(
            "select pg_try_advisory_lock(('x' || substr(md5(%s), 1, 16))::bit(64)::bigint)",
            [study_instance_uid],
        )
        if not got:
            return BUSY
        done_elsewhere = self._one(
            "select count(*) from raw.ingest_attempts where study_instance_uid = %s "
            "and run_id <> %s and loaded_at >= %s and outcome in ('loaded', 'already_present')",
            [study_instance_uid, self.run_id, self.since],
        )
        if done_elsewhere:
            self._unlock(study_instance_uid)
            logger.info("%s: loaded by another loader meanwhile; skipped", study_instance_uid)
            return DONE
        self._claimed.add(study_instance_uid)
        return MINE

    def _unlock(self, study_instance_uid: str) -> None:
        self._one(
            "select pg_advisory_unlock(('x' || substr(md5(%s), 1, 16))::bit(64)::bigint)",
            [study_instance_uid],
        )

    def release(self, study_instance_uid: str) -> None:
        if study_instance_uid in self._claimed:
            self._claimed.discard(study_instance_uid)
            self._unlock(study_instance_uid)

    @contextlib.contextmanager
    def association(self) -> Iterator[None]:
        """One of the PACS's ``max_associations`` slots, waited for, for one retrieval."""
        slot = self._take_slot()
        try:
            yield
        finally:
            with self._lock:
                self._con.execute(
                    "select pg_advisory_unlock(hashtext(%s), %s)", [self._pacs_key, slot]
                )
                self._held_slots.discard(slot)

    def _take_slot(self) -> int:
        """A free slot. Fair between loaders: one that waits says so (a shared lock on key 0
        of the slot space, held while it waits), and one that finds another loader waiting
        gives it one poll's head start before it takes a slot itself, so a loader that frees a
        slot and asks again at once cannot keep the others out (seen: a second loader started
        during the first one's load retrieved nothing until the first had finished)."""
        waiting = False
        try:
            while True:
                if not waiting and self._others_wait():
                    time.sleep(2 * POLL_SECONDS)
                with self._lock:
                    for slot in range(1, self.slots + 1):
                        if slot in self._held_slots:
                            continue
                        row = self._con.execute(
                            "select pg_try_advisory_lock(hashtext(%s), %s)", [self._pacs_key, slot]
                        ).fetchone()
                        if row and row[0]:
                            self._held_slots.add(slot)
                            return slot
                    if not waiting:
                        self._con.execute(
                            "select pg_advisory_lock_shared(hashtext(%s), 0)", [self._pacs_key]
                        )
                        waiting = True
                        logger.info("all %d associations of the PACS in use: waiting", self.slots)
                time.sleep(POLL_SECONDS)
        finally:
            if waiting:
                with self._lock:
                    self._con.execute(
                        "select pg_advisory_unlock_shared(hashtext(%s), 0)", [self._pacs_key]
                    )

    def _others_wait(self) -> bool:
        """Whether another loader (another session) waits for one of this PACS's slots."""
        return bool(
            self._one(
                "select exists (select 1 from pg_locks where locktype = 'advisory' "
                "and classid = hashtext(%s)::oid and objid = 0 and objsubid = 2 "
                "and pid <> pg_backend_pid())",
                [self._pacs_key],
            )
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._con.close()  # every lock of this session goes with it


def open_claims(settings: Settings, run_id: str, since: dt.datetime) -> Claims:
    """Shared claims when the warehouse is PostgreSQL, else the no-op."""
    if settings.warehouse.url:
        return SharedClaims(settings.warehouse.url, settings, run_id, since)
    return Claims()


__all__ = ["BUSY", "DONE", "MINE", "Claims", "SharedClaims", "open_claims"]
