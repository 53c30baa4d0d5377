"""WADO-RS retrieval of whole studies (``[pacs] protocol = "dicomweb"``): the same API and the
same folder as the DIMSE engine (``engine.py``), on at most ``max_associations`` HTTP
connections at once (one session per thread).

Each instance lands as ``dest/<SOPInstanceUID>.dcm`` exactly as the server sent it (asked for
with ``transfer-syntax=*``: the stored transfer syntax, no transcoding); the count is checked
against ``expected`` as for C-GET (``retrieve_incomplete`` when short).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from connectors.config import Settings
from connectors.errors import StudyFailed
from connectors.pacs.dicomweb import DicomwebClient
from connectors.pacs.retrieve.engine import RetrievedStudy
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
        self, study_instance_uid: str, dest: Path, expected: int | None = None
    ) -> RetrievedStudy:
        uid = study_instance_uid.strip()
        dest = Path(dest)
        dest.mkdir(mode=0o700, parents=True, exist_ok=True)
        sink = StudySink(uid, dest)
        started = time.monotonic()
        with self._slots:
            self._client().retrieve(uid, sink)
        seconds = time.monotonic() - started
        counts = f"{sink.files} of {'?' if expected is None else expected} files received"
        kw: dict[str, Any] = {"files_expected": expected, "files_received": sink.files}
        if sink.disk_full:
            raise StudyFailed("disk_full", f"study {uid}: disk full in {dest}; {counts}", **kw)
        if sink.files == 0:
            raise StudyFailed("no_images_on_pacs", f"study {uid}: WADO-RS sent no instances", **kw)
        if sink.errors or (expected is not None and sink.files < expected):
            raise StudyFailed("retrieve_incomplete", f"study {uid}: {counts}", **kw)
        logger.info(
            "retrieved %s by WADO-RS: %d files, %.1f MB in %.1f s",
            uid, sink.files, sink.bytes / 1e6, seconds,
        )  # fmt: skip
        return RetrievedStudy(uid, dest, sink.files, sink.bytes, expected, seconds)
