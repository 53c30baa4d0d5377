"""A study's retrieval that a PACS window's end interrupted (``[pacs] windows``), and what it
left: the instances that arrived stay in the study's folder, named by SOP Instance UID
(``storage.file_name_for``), so the folder itself says where the retrieval is; continuing it
asks the PACS only for what is not there (``missing``: WADO-RS series or instances,
``wado.py``; C-GET/C-MOVE series- or image-level identifiers, ``remaining_identifiers``, from
a C-FIND of the study's instances), and the study is uploaded once, whole. A C-GET or C-MOVE
in progress is stopped by a C-CANCEL after a sub-operation (``Canceller``).

``RetrievalPaused`` is raised by ``Retriever.retrieve(..., stop=...)`` when ``stop()`` said so
after an instance was written; the loader (``load/direct.py``) waits for the next window (or,
with ``--no-wait``, keeps the folder for the rerun) and calls ``retrieve`` again on the same
folder.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.association import Association

from connectors.errors import StudyFailed
from connectors.pacs.net import release_quietly
from connectors.pacs.retrieve.dimse import (
    PENDING,
    SubOperations,
    series_identifier,
    study_matches,
)
from connectors.pacs.storage import file_name_for

logger = logging.getLogger(__name__)


class RetrievalPaused(Exception):
    """The window ended during a study: ``files`` instances are in ``folder``, the rest not."""

    def __init__(self, study_instance_uid: str, folder: Path, files: int) -> None:
        super().__init__(
            f"study {study_instance_uid}: paused at a window's end with {files} instance(s) kept"
        )
        self.study_instance_uid = study_instance_uid
        self.folder = folder
        self.files = files


def held_in(folder: Path) -> set[str]:
    """The file names of the instances already in ``folder`` (a paused retrieval's); a ``.part``
    left by an instance that did not finish is removed (it is asked for again)."""
    if not folder.is_dir():
        return set()
    names = set()
    for f in folder.iterdir():
        if f.name.endswith(".part"):
            with contextlib.suppress(OSError):
                f.unlink()
        elif f.suffix == ".dcm" and f.is_file():
            names.add(f.name)
    return names


def missing(listing: list[tuple[str, str]], held: set[str]) -> list[tuple[str, list[str] | None]]:
    """Per series of ``listing`` ((Series UID, SOP Instance UID) of every instance the PACS
    holds), what is not among ``held`` (file names): None when none of the series arrived (ask
    for the whole series), else its missing SOP Instance UIDs (ask for each); a series that
    arrived whole is left out."""
    by_series: dict[str, list[str]] = {}
    for series, sop in listing:
        by_series.setdefault(series, []).append(sop)
    out: list[tuple[str, list[str] | None]] = []
    for series, sops in by_series.items():
        lacking = [sop for sop in sops if file_name_for(sop) not in held]
        if lacking:
            out.append((series, None if len(lacking) == len(sops) and series else lacking))
    return out


class Canceller:
    """C-GET or C-MOVE at a window's end: after each sub-operation's pending response ``stop`` is
    asked; when it says so a C-CANCEL goes to the PACS, which ends the retrieval after the
    sub-operations in flight (status 0xFE00); what arrived stays in the folder."""

    def __init__(self, stop: Callable[[], bool] | None) -> None:
        self.stop = stop
        self.cancelled = False

    def watch(
        self, assoc: Association, responses: Iterator[tuple[Any, Any]], model: str, msg_id: int
    ) -> Iterator[tuple[Any, Any]]:
        for status, ident in responses:
            yield status, ident
            if self.stop is None or self.cancelled or not status:
                continue
            if int(status.get("Status", -1)) in PENDING and self.stop():
                logger.info("a PACS window ended: C-CANCEL of the retrieval in progress")
                assoc.send_c_cancel(msg_id, query_model=model)
                self.cancelled = True


def pacs_instances(assoc: Association, uid: str) -> list[tuple[str, str]]:
    """(Series UID, SOP Instance UID) of every instance of the study, by C-FIND (series level,
    then image level per series) on the association in hand."""
    out = []
    for series in _find(assoc, uid, "SERIES", SeriesInstanceUID=""):
        s = str(series.get("SeriesInstanceUID") or "")
        for image in _find(assoc, uid, "IMAGE", SeriesInstanceUID=s, SOPInstanceUID=""):
            sop = str(image.get("SOPInstanceUID") or "")
            if sop:
                out.append((s, sop))
    return out


def remaining_identifiers(
    assoc: Association, uid: str, held: set[str], series: tuple[str, ...] | None = None
) -> list[Dataset]:
    """The C-GET identifiers of what a paused study still lacks (of ``series`` when given):
    series level for a series none of which arrived, image level for each missing instance."""
    out = []
    for s, sops in missing(pacs_instances(assoc, uid), held):
        if series is not None and s not in series:
            continue
        if sops is None:
            out.append(series_identifier(uid, s))
            continue
        for sop in sops:
            ds = series_identifier(uid, s)
            ds.QueryRetrieveLevel = "IMAGE"
            ds.SOPInstanceUID = sop
            out.append(ds)
    return out


def _find(assoc: Association, uid: str, level: str, **keys: str) -> list[Dataset]:
    q = Dataset()
    q.QueryRetrieveLevel = level
    q.StudyInstanceUID = uid
    for k, v in keys.items():
        setattr(q, k, v)
    found = study_matches(assoc, q, f"the {level}-level C-FIND listing a paused study")
    if found is None:
        raise StudyFailed(
            "retrieve_failed", f"study {uid}: the PACS cannot list a paused study's instances"
        )
    return found


def send_each(
    assoc: Association,
    ids: list[Any],
    send: Callable[[Any], SubOperations],
    outcomes: list[SubOperations],
    cancel: Canceller | None,
) -> bool:
    """``send`` each identifier in turn on ``assoc``, its outcome added to ``outcomes``; False
    as soon as the association died or a window's end cancelled it (then it is released,
    never kept idle: a long pause is ahead)."""
    for ident in ids:
        outcomes.append(send(ident))
        if not assoc.is_established or outcomes[-1].final_status is None:
            return False
        if cancel is not None and cancel.cancelled:
            release_quietly(assoc)
            return False
    return True
