"""Which failures a retry may help: read from ``seeds/failure_reasons.csv``, the one place that
says it (the models read the same seed for ``ingest_failures.is_retryable``). Python raises a
reason category (``StudyFailed``); whether to try again inside the run is looked up here."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

from connectors.errors import InputError

logger = logging.getLogger(__name__)

SEED = Path("seeds") / "failure_reasons.csv"


@dataclass(frozen=True)
class RetryPolicy:
    """reason category -> is_transient, as the seed says."""

    transient: dict[str, bool]

    @classmethod
    def from_project(cls, project_dir: Path) -> RetryPolicy:
        path = Path(project_dir) / SEED
        try:
            with open(path, encoding="utf-8-sig", newline="") as f:
                rows = list(csv.DictReader(f))
        except OSError as e:
            raise InputError(
                f"cannot read the failure reasons seed: {e.strerror}", file=path
            ) from None
        out: dict[str, bool] = {}
        for n, row in enumerate(rows, start=2):
            value = (row.get("is_transient") or "").strip().lower()
            if value not in ("true", "false") or not row.get("reason_category"):
                raise InputError(
                    "each reason needs a reason_category and is_transient true or false",
                    file=path,
                    row=n,
                    column="is_transient",
                )
            out[row["reason_category"].strip()] = value == "true"
        return cls(out)

    def is_transient(self, reason_category: str) -> bool:
        """Whether a retry inside the same run may help; an unknown reason is not retried."""
        if reason_category not in self.transient:
            logger.warning("reason %r is not in %s: not retried", reason_category, SEED)
            return False
        return self.transient[reason_category]
