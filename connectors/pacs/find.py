"""The PACS connector: C-ECHO and study-level C-FIND (Study Root) with pynetdicom.

Public API (other connectors import these; the networking helpers live in ``pacs_net``):

- ``make_ae(settings, contexts)``, ``open_association(settings, ae)``, ``NODELAY_HANDLERS``,
  ``has_tcp_nodelay(assoc)``: AEs with the ``[pacs]`` timeouts, associations with
  TCP_NODELAY on our socket, refusals as ``PacsUnreachable`` (exit 3).
- ``pacs_association(settings, contexts=QUERY_CONTEXTS)``: a context manager yielding an
  established association, released on exit (aborted on error).
- ``echo(settings)``: C-ECHO; returns the status.
- ``find_patient(assoc, mrn, window, result_cap=0) -> FindResult`` and
  ``find_studies(...) -> list[dict]``: one patient's studies in a StudyDate window as rows of
  ``raw.pacs_studies`` (DICOM values as sent, as strings). A capped answer (Orthanc's Cancel
  0xFE00 after exactly ``LimitFindResults`` answers, or exactly ``find_result_cap`` answers
  from a PACS that ends with Success) is split by date (then by time on a single day) until
  every answer fits. Failure statuses and lost associations raise ``QueryFailed``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from connectors.errors import PacsUnreachable, QueryFailed
from connectors.pacs.dicomweb import DicomwebClient
from connectors.pacs.net import (
    NODELAY_HANDLERS,
    describe,
    has_tcp_nodelay,
    make_ae,
    open_association,
    set_tcp_nodelay,
)

if TYPE_CHECKING:
    from pynetdicom.association import Association

    from connectors.config import PacsConfig, Settings

logger = logging.getLogger(__name__)

FIND_MODEL = StudyRootQueryRetrieveInformationModelFind
QUERY_CONTEXTS: tuple[str, ...] = (Verification, StudyRootQueryRetrieveInformationModelFind)

#: Return keys of the study-level C-FIND -> the ``raw.pacs_studies`` column each is stored in.
RETURN_KEYS: dict[str, str] = {
    "AccessionNumber": "accession_number",
    "PatientID": "patient_id",
    "StudyDate": "study_date",
    "StudyTime": "study_time",
    "StudyDescription": "study_description",
    "StudyInstanceUID": "study_instance_uid",
    "ModalitiesInStudy": "modalities_in_study",
    "NumberOfStudyRelatedInstances": "number_of_study_related_instances",
    "PatientName": "patient_name",
    "PatientBirthDate": "patient_birth_date",
}
PENDING = (0xFF00, 0xFF01)
SUCCESS = 0x0000
CANCEL = 0xFE00
OUT_OF_RESOURCES = 0xA700
#: Bounds used when a capped answer over an open date range must be split.
EARLIEST = dt.date(1800, 1, 1)
LATEST = dt.date(2200, 12, 31)
DAY_SECONDS = 24 * 3600
WILDCARDS = ("*", "?", "\\")

STATUS_MEANINGS = {
    0xA700: "refused: out of resources",
    0xA900: "identifier does not match SOP class",
    0xC000: "unable to process",
    0xFE00: "cancelled",
    0x0122: "SOP class not supported",
}


def status_hex(code: int | None) -> str | None:
    """``0xA700`` form of a DIMSE status, as ``raw.pacs_queries.status_code`` stores it."""
    return None if code is None else f"0x{code:04X}"


@dataclass(frozen=True)
class Window:
    """A StudyDate range to ask for; None at either end is open (both None: all dates)."""

    date_from: dt.date | None = None
    date_to: dt.date | None = None

    def dicom(self) -> str:
        """The DA range matching value: ``""``, ``"20260101-"``, ``"-20261125"``, ``"A-B"``."""
        if self.date_from is None and self.date_to is None:
            return ""
        if self.date_from is not None and self.date_from == self.date_to:
            return _da(self.date_from)
        return f"{_da(self.date_from)}-{_da(self.date_to)}"


def _da(d: dt.date | None) -> str:
    return d.strftime("%Y%m%d") if d is not None else ""


@dataclass
class FindResult:
    """One patient's answer: studies (``raw.pacs_studies`` columns), sub-queries sent."""

    studies: list[dict[str, str | None]]
    sub_queries: int
    status_code: str | None = "0x0000"


# --------------------------------------------------------------------------- associations


@contextlib.contextmanager
def pacs_association(
    settings: Settings | PacsConfig,
    contexts: Sequence[Any] = QUERY_CONTEXTS,
    **kwargs: Any,
) -> Iterator[Association]:
    """An established association with the configured PACS (TCP_NODELAY on), released on
    exit and aborted on error. ``PacsUnreachable`` when it cannot be opened."""
    assoc = open_association(settings, make_ae(settings, contexts), **kwargs)
    try:
        yield assoc
    except BaseException:
        assoc.abort()
        raise
    else:
        if assoc.is_established:
            assoc.release()


def echo(settings: Settings | PacsConfig) -> int:
    """C-ECHO the PACS; returns the status (0 is success). ``PacsUnreachable`` if no answer."""
    with pacs_association(settings, (Verification,)) as assoc:
        status = assoc.send_c_echo()
    if not status or "Status" not in status:
        raise PacsUnreachable(f"{describe(settings)} did not answer C-ECHO")
    return int(status.Status)


# --------------------------------------------------------------------------- C-FIND


def study_query(mrn: str, window: Window, study_time: str = "") -> Dataset:
    """The study-level identifier for one patient and window, with every return key."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    for keyword in RETURN_KEYS:
        setattr(ds, keyword, "")
    ds.PatientID = mrn
    ds.StudyDate = window.dicom()
    ds.StudyTime = study_time
    return ds


def _text(ds: Dataset, keyword: str) -> str | None:
    """An attribute as sent, as a string: absent -> None, empty -> "", multi-valued joined
    with a backslash, person names decoded with the answer's Specific Character Set."""
    if keyword not in ds:
        return None
    value = ds[keyword].value
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    return str(value)


def answer_row(ds: Dataset) -> dict[str, str | None]:
    """A C-FIND answer as ``raw.pacs_studies`` columns (values as sent)."""
    row = {column: _text(ds, keyword) for keyword, column in RETURN_KEYS.items()}
    row["specific_character_set"] = _text(ds, "SpecificCharacterSet")
    return row


def _send_find(assoc: Association, query: Dataset) -> tuple[list[dict[str, str | None]], int]:
    """One C-FIND: the answers and the final status. ``QueryFailed`` on failure statuses and
    on a lost association (no final status)."""
    answers: list[dict[str, str | None]] = []
    final: int | None = None
    try:
        for status, identifier in assoc.send_c_find(query, FIND_MODEL):
            if not status or "Status" not in status:
                break  # DIMSE timeout, abort or network loss: pynetdicom yields an empty status
            code = int(status.Status)
            if code in PENDING:
                if identifier is not None:
                    answers.append(answer_row(identifier))
            else:
                final = code
    except RuntimeError as e:  # "association not established" and friends
        raise QueryFailed(f"association lost: {e}", transient=True) from None
    return answers, judge_final(final)


def judge_final(final: int | None) -> int:
    """A C-FIND's final status, when it is one to keep the answers of (Success, Cancel, a
    warning); ``QueryFailed`` otherwise (transient when the association was lost, None, or the
    PACS was out of resources)."""
    if final is None:
        raise QueryFailed("association lost before the C-FIND finished", transient=True)
    if final in (SUCCESS, CANCEL) or 0xB000 <= final <= 0xBFFF:
        return final
    meaning = STATUS_MEANINGS.get(final) or (
        "unable to process" if 0xC000 <= final <= 0xCFFF else "failure"
    )
    raise QueryFailed(
        f"PACS answered C-FIND with status {status_hex(final)} ({meaning})",
        status_code=status_hex(final),
        transient=final == OUT_OF_RESOURCES,
    )


def is_capped(final: int, answers: int, result_cap: int) -> bool:
    """Whether an answer may be cut short by the PACS's cap and must be split to be complete:
    Orthanc's Cancel after ``LimitFindResults`` answers, or ``result_cap`` answers or more."""
    return final == CANCEL or (result_cap > 0 and answers >= result_cap)


def unique_studies(rows: Sequence[dict[str, str | None]]) -> dict[str, dict[str, str | None]]:
    """Answers by Study Instance UID, the first of each kept (one without a UID is dropped)."""
    studies: dict[str, dict[str, str | None]] = {}
    for row in rows:
        uid = (row.get("study_instance_uid") or "").strip()
        if uid:
            studies.setdefault(uid, row)
    return studies


def check_mrn(mrn: str) -> None:
    """``QueryFailed`` for an MRN that would ask for more than one patient (or for none)."""
    if not mrn or any(c in mrn for c in WILDCARDS):
        raise QueryFailed(f"MRN {mrn!r} is empty or holds a DICOM wildcard; not asked")


def _split(
    lo: dt.date | None, hi: dt.date | None, times: tuple[int, int] | None
) -> list[tuple[dt.date | None, dt.date | None, tuple[int, int] | None]] | None:
    """Halve a capped range: by date, then by time within a single day; None if it cannot."""
    if times is None:
        if lo is None:
            return [(None, EARLIEST - dt.timedelta(days=1), None), (EARLIEST, hi, None)]
        if hi is None:
            if lo > LATEST:
                return None
            return [(lo, LATEST, None), (LATEST + dt.timedelta(days=1), None, None)]
        if lo < hi:
            mid = lo + (hi - lo) // 2
            return [(lo, mid, None), (mid + dt.timedelta(days=1), hi, None)]
        return [(lo, hi, (0, DAY_SECONDS // 2 - 1)), (lo, hi, (DAY_SECONDS // 2, DAY_SECONDS - 1))]
    a, b = times
    if b - a < 60:
        return None
    half = a + (b - a) // 2
    return [(lo, hi, (a, half)), (lo, hi, (half + 1, b))]


def _tm(seconds: int) -> str:
    return f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}"


def find_patient(
    assoc: Association | DicomwebClient, mrn: str, window: Window, *, result_cap: int = 0
) -> FindResult:
    """Every study of one patient in ``window``, splitting capped answers until all fit."""
    check_mrn(mrn)
    studies: dict[str, dict[str, str | None]] = {}
    sub_queries = 0
    todo: list[tuple[dt.date | None, dt.date | None, tuple[int, int] | None]] = [
        (window.date_from, window.date_to, None)
    ]
    while todo:
        lo, hi, times = todo.pop()
        study_time = f"{_tm(times[0])}-{_tm(times[1])}" if times else ""
        if isinstance(assoc, DicomwebClient):  # QIDO-RS: the same splitting of capped answers
            found, final = assoc.find(mrn, Window(lo, hi).dicom(), study_time)
            answers = [answer_row(ds) for ds in found]
        else:
            answers, final = _send_find(assoc, study_query(mrn, Window(lo, hi), study_time))
        sub_queries += 1
        if is_capped(final, len(answers), result_cap):
            parts = _split(lo, hi, times)
            if parts is None:
                raise QueryFailed(
                    f"the PACS capped the answer at {len(answers)} studies for "
                    f"StudyDate {Window(lo, hi).dicom() or 'any'} {study_time} and it cannot "
                    "be split further",
                    status_code=status_hex(final),
                )
            logger.debug("capped answer (%d) split into %d sub-queries", len(answers), len(parts))
            todo.extend(reversed(parts))
            continue
        for uid, row in unique_studies(answers).items():
            studies.setdefault(uid, row)
    return FindResult(list(studies.values()), sub_queries)


def find_studies(
    assoc: Association | DicomwebClient, mrn: str, window: Window, *, result_cap: int = 0
) -> list[dict[str, str | None]]:
    """``find_patient(...).studies``: one patient's studies as ``raw.pacs_studies`` rows."""
    return find_patient(assoc, mrn, window, result_cap=result_cap).studies


__all__ = [
    "FIND_MODEL",
    "NODELAY_HANDLERS",
    "QUERY_CONTEXTS",
    "RETURN_KEYS",
    "FindResult",
    "Window",
    "answer_row",
    "check_mrn",
    "echo",
    "find_patient",
    "find_studies",
    "has_tcp_nodelay",
    "is_capped",
    "judge_final",
    "make_ae",
    "open_association",
    "pacs_association",
    "set_tcp_nodelay",
    "status_hex",
    "study_query",
    "unique_studies",
]
