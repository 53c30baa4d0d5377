"""WADO-RS retrieval of whole studies (``[pacs] protocol = "dicomweb"``): the same API and the
same folder as the DIMSE engine (``engine.py``), on at most ``max_associations`` HTTP
connections at once (one session per thread).

Each instance lands as ``dest/<SOPInstanceUID>.dcm`` exactly as the server sent it (asked for
with ``transfer-syntax=*``: the stored transfer syntax, no transcoding); the count is checked
against ``expected`` as for C-GET (``retrieve_incomplete`` when short). A window's end stops it
between instances (``stop``); the next call continues with what is missing (``resume.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from connectors.config import Settings
from connectors.errors import StudyFailed
from connectors.pacs.dicomweb import DicomwebClient
from connectors.pacs.retrieve.engine import RetrievedStudy
from connectors.pacs.retrieve.resume import RetrievalPaused, held_in, missing
from connectors.pacs.storage import StudySink

logger = logging.getLogger(__name__)


class WadoRetriever:
    """Whole studies by WADO-RS; thread-safe, ``max_associations`` transfers at once."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._slots = threading.BoundedSemaphore(settings.pacs.max_associations)
        self._local = threading.local()
        self._clients: list[DicomwebClient] = []
        self._lock = threading.Lock()

    def _client(self) -> DicomwebClient:
        client: DicomwebClient | None = getattr(self._local, "client", None)
        if client is None:
            client = DicomwebClient(self.settings.pacs)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for c in clients:
            c.close()

    def retrieve(
        self,
        study_instance_uid: str,
        dest: Path,
        expected: int | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> RetrievedStudy:
        """The study into ``dest``. With ``stop`` (a PACS window's end) the transfer ends after
        the instance in flight and ``RetrievalPaused`` is raised; called again on the same
        folder it asks only for the instances not there yet (``resume.py``)."""
        uid = study_instance_uid.strip()
        dest = Path(dest)
        dest.mkdir(mode=0o700, parents=True, exist_ok=True)
        held = held_in(dest)
        sink = StudySink(uid, dest)
        started = time.monotonic()
        with self._slots:
            client = self._client()
            if held:
                complete = self._continue(client, uid, sink, held, stop)
            else:
                complete = client.retrieve(uid, sink, stop)
        seconds = time.monotonic() - started
        files = len(held_in(dest))
        if not complete and not sink.disk_full and not sink.errors:
            raise RetrievalPaused(uid, dest, files)
        counts = f"{files} of {'?' if expected is None else expected} files received"
        kw: dict[str, Any] = {"files_expected": expected, "files_received": files}
        if sink.disk_full:
            raise StudyFailed("disk_full", f"study {uid}: disk full in {dest}; {counts}", **kw)
        if files == 0:
            raise StudyFailed("no_images_on_pacs", f"study {uid}: WADO-RS sent no instances", **kw)
        if sink.errors or (expected is not None and files < expected):
            raise StudyFailed("retrieve_incomplete", f"study {uid}: {counts}", **kw)
        logger.info(
            "retrieved %s by WADO-RS: %d files (%d now, %d kept from before a pause), "
            "%.1f MB in %.1f s",
            uid, files, sink.files, len(held), sink.bytes / 1e6, seconds,
        )  # fmt: skip
        return RetrievedStudy(uid, dest, files, sink.bytes, expected, seconds)

    def _continue(
        self,
        client: DicomwebClient,
        uid: str,
        sink: StudySink,
        held: set[str],
        stop: Callable[[], bool] | None,
    ) -> bool:
        """A paused study continued: the series none of which arrived whole, the instances of
        a series part of which arrived one by one; nothing already in the folder again."""
        for series, sops in missing(client.instances(uid), held):
            if sops is None:
                paths = [f"/series/{series}"]
            else:
                paths = [f"/series/{series}/instances/{sop}" for sop in sops]
            for path in paths:
                if not client.retrieve(uid, sink, stop, path):
                    return False
        return True
