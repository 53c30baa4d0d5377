"""The DIMSE side of a retrieve: the identifier, reading C-GET/C-MOVE responses, the C-FIND
that tells "not on the PACS" from "no images" when a retrieve brought nothing, and the error for
an association the PACS closed while we waited for an answer (``association_lost``: transient,
so the retry policy tries the study again; the wait ends at once, see
``connectors/seams/pynetdicom_dimse.py``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
)

from connectors.errors import StudyFailed

logger = logging.getLogger(__name__)

PENDING = {0xFF00, 0xFF01}


@dataclass
class SubOperations:
    """What the PACS said about one C-GET/C-MOVE."""

    final_status: int | None = None
    completed: int = 0
    failed: int = 0
    warning: int = 0
    total: int | None = None  # completed + failed + warning + remaining, from the PACS


def identifier(uid: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = uid
    return ds


def series_identifier(uid: str, series_uid: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES"
    ds.StudyInstanceUID = uid
    ds.SeriesInstanceUID = series_uid
    return ds


def merge(parts: list[SubOperations]) -> SubOperations:
    """Several C-GETs of one study (split across associations) as one: counts added, the
    first status that is not Success wins (None if any association died)."""
    if len(parts) == 1:
        return parts[0]
    out = SubOperations(final_status=0x0000)
    for p in parts:
        if p.final_status is None:
            out.final_status = None
        elif out.final_status == 0x0000 and p.final_status != 0x0000:
            out.final_status = p.final_status
        out.completed += p.completed
        out.failed += p.failed
        out.warning += p.warning
        if p.total is not None:
            out.total = (out.total or 0) + p.total
    return out


def consume(responses: Any) -> SubOperations:
    """Read a C-GET/C-MOVE response stream once; an empty status means the association died."""
    out = SubOperations()
    for status, _identifier_ds in responses:
        if not status or "Status" not in status:
            out.final_status = None
            return out
        code = int(status.Status)
        done = [int(status.get(k) or 0) for k in _SUBOP_KEYS]
        if code in PENDING:
            out.total = sum(done) + int(status.get("NumberOfRemainingSuboperations") or 0)
            continue
        out.final_status = code
        out.completed, out.failed, out.warning = done
        if out.total is None and any(done):
            out.total = sum(done)
    return out


_SUBOP_KEYS = (
    "NumberOfCompletedSuboperations",
    "NumberOfFailedSuboperations",
    "NumberOfWarningSuboperations",
)


def association_lost(uid: str, during: str) -> StudyFailed:
    """The PACS closed or aborted the association (or the connection) while we waited for its
    answer to ``during``: a transient ``retrieve_failed``."""
    return StudyFailed(
        "retrieve_failed",
        f"study {uid}: the PACS closed the association while we waited for its answer to "
        f"{during}; the study is retried",
    )


def answered(status: Any) -> bool:
    """Whether a ``send_c_*()`` status is the PACS's (an empty one: the association died)."""
    return bool(status) and "Status" in status


def study_matches(assoc: Association, query: Dataset, asking: str) -> list[Dataset] | None:
    """The pending answers of a C-FIND about one study (``query.StudyInstanceUID``), or None
    when the association has no Find context (the PACS cannot be asked); ``association_lost``
    (transient) when the PACS closed the association meanwhile (``asking``: what it was for)."""
    uid = str(query.StudyInstanceUID)
    found = []
    try:
        for status, ident in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            if not answered(status):
                raise association_lost(uid, asking)
            if int(status.get("Status", -1)) in PENDING and ident is not None:
                found.append(ident)
    except RuntimeError as e:  # "must be established": the PACS closed it
        raise association_lost(uid, asking) from e
    except ValueError as e:  # no Find context accepted: cannot ask
        logger.debug("C-FIND (%s) not possible: %s", asking, e)
        return None
    return found


def find_study(assoc: Association, uid: str) -> dict[str, Any] | None:
    """A study-level C-FIND on the same association: None when the PACS does not know it."""
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.StudyInstanceUID = uid
    q.NumberOfStudyRelatedInstances = ""
    found = study_matches(assoc, q, "the C-FIND asking whether the study exists")
    if found is None:  # cannot tell
        return {"NumberOfStudyRelatedInstances": None}
    if not found:
        return None
    n = found[-1].get("NumberOfStudyRelatedInstances")
    return {"NumberOfStudyRelatedInstances": None if n in (None, "") else int(n)}
