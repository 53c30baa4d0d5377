"""The loader's retrieval API: whole studies from the PACS to disk, C-GET, C-MOVE or WADO-RS
(``[pacs] protocol = "dicomweb"``: ``wado.py``).

::

    with Retriever(settings) as r:                       # reuses associations
        got = r.retrieve(study_uid, dest, expected=n)    # thread-safe, <= max_associations at once

pynetdicom C-GET and C-MOVE with several associations run one association per worker process
(``workers.py``: they would share one GIL in threads; for C-MOVE each worker runs a storage SCP
on the same port, ``storage_scp.py``: 0.97-1.46x C-MOVE in threads on 20-30 studies x 100
images, benchmarks/load); everything else runs in this process (``engine.py``). Both leave the
same folder and raise the same errors.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from connectors.config import Settings
from connectors.pacs.retrieve.engine import (
    AssociationRetriever,
    RetrievedStudy,
    check_move_destination,
)
from connectors.pacs.retrieve.wado import WadoRetriever
from connectors.pacs.retrieve.workers import WorkerPool, raise_or_return


class Retriever:
    """Whole studies to disk with at most ``max_associations`` associations at once."""

    def __init__(
        self, settings: Settings, *, move_in_processes: bool = True, shared: bool = False
    ) -> None:
        """``move_in_processes``: C-MOVE in worker processes too (measured 0.97-1.46x C-MOVE
        in threads on 264-396 MB, 0.86x on 95 MB where the workers' start-up weighs most,
        benchmarks/load/README.md); False keeps it in this process's threads.
        ``shared``: the associations are a team-wide count (several loaders on one
        PostgreSQL warehouse, ``load/claims.py``): retrieval runs in this process's threads and
        no association stays open between studies. With ``[pacs] windows`` C-GET and C-MOVE run
        in this process's threads too, so a window's end can stop a study after the instance in
        flight (``retrieve(..., stop=...)``: a worker process cannot be asked)."""
        pacs = settings.pacs
        self.settings = settings
        self._wado = WadoRetriever(settings) if pacs.protocol == "dicomweb" else None
        if self._wado is None:
            check_move_destination(settings)
        self._in_processes = (
            self._wado is None
            and not shared
            and pacs.retrieve_backend == "pynetdicom"
            and pacs.max_associations > 1
            and (pacs.retrieve == "c-get" or move_in_processes)
            and not pacs.windows
        )
        self._registry: Path | None = None
        self._pool: WorkerPool | None = None
        dimse_here = not (self._in_processes or self._wado)
        self._local = AssociationRetriever(settings, keep_idle=not shared) if dimse_here else None

    def __enter__(self) -> Retriever:
        if self._in_processes:
            if self.settings.pacs.retrieve == "c-move":  # one receiver per worker, same port
                self.settings.work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._registry = Path(tempfile.mkdtemp(".moving", dir=self.settings.work_dir))
            self._pool = WorkerPool(
                self.settings, self.settings.pacs.max_associations, self._registry
            )
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
        if self._wado is not None:
            self._wado.close()
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._registry is not None:
            shutil.rmtree(self._registry, ignore_errors=True)
            self._registry = None
        if self._local is not None:
            self._local.close()

    def retrieve(
        self,
        study_instance_uid: str,
        dest: Path,
        expected: int | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> RetrievedStudy:
        """Retrieve one study into ``dest`` (created owner-only). ``stop`` (a PACS window's
        end): over WADO-RS, pynetdicom C-GET and C-MOVE and dcmtk's getscu the retrieval ends
        after the instance in flight (``RetrievalPaused``; DIMSE by a C-CANCEL, getscu ended,
        ``dcmtk.py``) and the next call on ``dest`` continues it with only what is missing
        (``resume.py``); dcmtk's movescu, and worker processes (no ``[pacs] windows``) do not
        ask it: the study in hand finishes."""
        if self._wado is not None:
            return self._wado.retrieve(study_instance_uid, dest, expected, stop)
        if self._local is not None:
            return self._local.retrieve(study_instance_uid, dest, expected, stop)
        assert self._pool is not None, "use Retriever as a context manager"
        uid = study_instance_uid.strip()
        dest = Path(dest)
        dest.mkdir(mode=0o700, parents=True, exist_ok=True)
        files, size, seconds, conversions = raise_or_return(self._pool.run(uid, dest, expected))
        # the worker's own time: the PACS's answer, not a worker's start-up (the throttle)
        return RetrievedStudy(uid, dest, files, size, expected, seconds, *conversions)
