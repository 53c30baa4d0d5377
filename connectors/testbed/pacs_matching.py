"""The demo PACS's C-FIND matching (DICOM PS3.4 C.2.2.2) and its image-level answers
(``DemoPacs(reported_syntax=...)``): SOP Class and Instance UID, Series Instance UID and the
Transfer Syntax UID (0002,0010) it says it stores, which some PACS answer and Orthanc and
dcmqrscp do not. ``reported`` overrides that syntax per
SOP Instance UID: a PACS that says it stores one syntax and sends another (converts on the way).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from pydicom.dataset import Dataset

TRANSFER_SYNTAX_TAG = 0x00020010
RANGE_VRS = {"DA", "TM", "DT"}


def match_value(query: str, value: str, vr: str) -> bool:
    """DICOM PS3.4 C.2.2.2 matching of one non-empty query value against a stored value."""
    if vr in RANGE_VRS and "-" in query:
        lo, _, hi = query.partition("-")
        v = value.strip()
        if not v:
            return False
        if vr == "TM":
            v, lo, hi = v.replace(":", ""), lo.replace(":", ""), hi.replace(":", "")
        return (not lo or v >= lo.strip()) and (not hi or v[: len(hi.strip())] <= hi.strip())
    if vr == "UI":
        return value in query.split("\\")
    if "*" in query or "?" in query:
        return fnmatch.fnmatchcase(
            value.upper() if vr == "PN" else value, query.upper() if vr == "PN" else query
        )
    if vr == "PN":
        return value.upper().rstrip("^") == query.upper().rstrip("^")
    return value.strip() == query.strip()


def image_answers(
    instances: Iterable[Any], study_uid: str, reported: Mapping[str, str]
) -> Iterator[tuple[int, Dataset]]:
    """One pending answer per instance (``Instance`` of ``pacs_scp``)."""
    for inst in instances:
        ds = Dataset()
        ds.QueryRetrieveLevel = "IMAGE"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = inst.series_instance_uid
        ds.SOPInstanceUID = inst.sop_instance_uid
        ds.SOPClassUID = inst.sop_class_uid
        held = reported.get(inst.sop_instance_uid, inst.transfer_syntax_uid)
        ds.add_new(TRANSFER_SYNTAX_TAG, "UI", held)
        yield 0xFF00, ds
