"""The loader follows the manifest while it runs: the admin may change the rules or the master
list and rebuild during a day-long load. Before a study is started, the manifest mart is read
again if ``[load] manifest_refresh_seconds`` have passed since the last read; a study no
longer in it is not started (a study already in hand finishes). The read is a short
transaction; while the warehouse is busy the last read stands."""

from __future__ import annotations

import logging
import threading
import time

from connectors.errors import StepFailed, WarehouseBusy
from connectors.warehouse.lock import holding
from connectors.warehouse.store import Warehouse

logger = logging.getLogger(__name__)

#: How long the watch waits for a busy warehouse before it keeps its last read.
READ_WAIT_SECONDS = 2.0


class ManifestWatch:
    """The Study UIDs of the manifest as last read, read again every ``refresh_seconds``."""

    def __init__(
        self, warehouse: Warehouse, relation: str, uids: set[str], refresh_seconds: float
    ) -> None:
        self.warehouse = warehouse
        self.relation = relation
        self.uids = set(uids)
        self.refresh_seconds = refresh_seconds
        self.dropped: set[str] = set()
        self._read_at = time.monotonic()
        self._lock = threading.Lock()

    def wanted(self, study_instance_uid: str) -> bool:
        """Whether the study is still in the manifest (read again if it is time); a study
        found gone is counted in ``dropped``."""
        with self._lock:
            if time.monotonic() - self._read_at >= self.refresh_seconds:
                self._refresh()
            if study_instance_uid in self.uids:
                return True
            self.dropped.add(study_instance_uid)
            logger.info("study %s left the manifest: not started", study_instance_uid)
            return False

    def _refresh(self) -> None:
        try:
            with holding(self.warehouse.path, READ_WAIT_SECONDS):  # briefly, then give up
                _, rows = self.warehouse.read_table(
                    self.relation,
                    columns=("study_instance_uid",),
                    required="the manifest disappeared during the load",
                )
        except (WarehouseBusy, StepFailed) as e:
            logger.info("manifest not read again (%s): the last read stands", e)
            return
        self.uids = {str(r[0]) for r in rows}
        self._read_at = time.monotonic()
