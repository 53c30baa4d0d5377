"""The loader's retrieval API: whole studies from the PACS to disk, C-GET or C-MOVE.

::

    with Retriever(settings) as r:                       # reuses associations
        got = r.retrieve(study_uid, dest, expected=n)    # thread-safe, <= max_associations at once

pynetdicom C-GET with several associations runs one association per worker process
(``workers.py``: they would share one GIL in threads); everything else runs in this process
(``engine.py``). Both leave the same folder and raise the same errors.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType

from connectors.config import Settings
from connectors.pacs.retrieve.engine import AssociationRetriever, RetrievedStudy
from connectors.pacs.retrieve.workers import WorkerPool, raise_or_return


class Retriever:
    """Whole studies to disk with at most ``max_associations`` associations at once."""

    def __init__(self, settings: Settings, *, shared: bool = False) -> None:
        """``shared``: the associations are a team-wide count (several loaders on one
        PostgreSQL warehouse, ``load/claims.py``): retrieval runs in this process's threads and
        no association stays open between studies."""
        pacs = settings.pacs
        self.settings = settings
        self._in_processes = (
            not shared
            and pacs.retrieve_backend == "pynetdicom"
            and pacs.retrieve == "c-get"
            and pacs.max_associations > 1
        )
        self._pool: WorkerPool | None = None
        self._local = (
            None if self._in_processes else AssociationRetriever(settings, keep_idle=not shared)
        )

    def __enter__(self) -> Retriever:
        if self._in_processes:
            self._pool = WorkerPool(self.settings, self.settings.pacs.max_associations)
        elif self._local is not None:
            self._local.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._local is not None:
            self._local.close()

    def retrieve(
        self, study_instance_uid: str, dest: Path, expected: int | None = None
    ) -> RetrievedStudy:
        """Retrieve one study into ``dest`` (created owner-only)."""
        if self._local is not None:
            return self._local.retrieve(study_instance_uid, dest, expected)
        assert self._pool is not None, "use Retriever as a context manager"
        uid = study_instance_uid.strip()
        dest = Path(dest)
        dest.mkdir(mode=0o700, parents=True, exist_ok=True)
        started = time.monotonic()
        files, size, _ = raise_or_return(self._pool.run(uid, dest, expected))
        return RetrievedStudy(uid, dest, files, size, expected, time.monotonic() - started)
