"""Judging a retrieve: what arrived against what the PACS said and the manifest expected,
turned into ``StudyFailed`` with its reason category (``seeds/failure_reasons.csv``)."""

from __future__ import annotations

import time
from typing import Any

from pynetdicom.association import Association

from connectors.config import Settings
from connectors.errors import StudyFailed
from connectors.pacs.retrieve.dimse import SubOperations, find_study
from connectors.pacs.storage import StudySink

WARNING_SUBOPS = 0xB000


def raise_nothing_found(assoc: Association, uid: str, expected: int | None) -> None:
    """Nothing came: ask the PACS whether the study exists (C-FIND) to name the failure."""
    if expected == 0:
        raise StudyFailed("no_images_on_pacs", f"study {uid}: the PACS holds no images")
    found = find_study(assoc, uid)
    if found is None:
        raise StudyFailed(
            "not_found_on_pacs",
            f"study {uid} is not on the PACS",
            files_expected=expected,
            files_received=0,
        )
    n = found.get("NumberOfStudyRelatedInstances")
    if n in (None, "", 0, "0"):
        raise StudyFailed(
            "no_images_on_pacs",
            f"study {uid}: the PACS lists it with no images",
            files_expected=expected,
            files_received=0,
        )


def judge(
    settings: Settings,
    sink: StudySink,
    outcome: SubOperations,
    expected: int | None,
    *,
    lost: bool,
) -> None:
    uid = sink.study_instance_uid
    counts = f"{sink.files} of {_n(expected or outcome.total)} files received"
    conversions = sink.conversions()
    kw: dict[str, Any] = {
        "files_expected": expected,
        "files_received": sink.files,
        "conversions": conversions,
    }
    if sink.disk_full:
        raise StudyFailed(
            "disk_full",
            f"study {uid}: disk full in {sink.folder} ({sink.last_error}); {counts}",
            **kw,
        )
    if lost:
        silent = time.monotonic() - sink.last_activity  # pynetdicom aborts on DIMSE timeout
        timed_out = silent >= 0.9 * settings.pacs.dimse_timeout
        hint = ""
        if settings.pacs.retrieve == "c-get" and sink.files == 0 and outcome.total is None:
            hint = (
                " (the PACS closed it on our C-GET before sending anything: if it does not "
                "offer C-GET to us, as Orthanc logs 'Rejected Get request', set [pacs] "
                "retrieve = 'c-move' with a move_destination it knows)"
            )
        raise StudyFailed(
            "timeout" if timed_out else "retrieve_failed",
            f"study {uid}: the association was lost during the transfer{hint}; {counts}",
            **kw,
        )
    status = outcome.final_status
    if status not in (0x0000, WARNING_SUBOPS):
        hint = ""  # C-MOVE to an unknown destination: Orthanc 0xC000, others 0xA801
        if settings.pacs.retrieve == "c-move" and sink.files == 0:
            hint = (
                f" (does it know our move_destination {settings.pacs.move_destination!r}"
                f" at port {settings.pacs.receive_port}?)"
            )
        raise StudyFailed(
            "retrieve_failed",
            f"study {uid}: the PACS answered with status 0x{status or 0:04X}{hint}; {counts}",
            **kw,
        )
    if conversions[2]:  # never lossy on the way: the PACS holds better than it sent
        raise StudyFailed(
            "lossy_conversion",
            f"study {uid}: {conversions[2]} of {sink.files} instances arrived converted to a "
            "lossy transfer syntax though the PACS stores them lossless (it offered no "
            "other); nothing was loaded",
            **kw,
        )
    missing = outcome.failed + outcome.warning
    short_of_expected = expected is not None and sink.files < expected
    short_of_pacs = outcome.total is not None and sink.files < outcome.total
    if missing or short_of_expected or short_of_pacs or sink.errors:
        detail = f"{outcome.failed} sub-operations failed" if outcome.failed else ""
        raise StudyFailed(
            "retrieve_incomplete",
            f"study {uid}: {counts}" + (f" ({detail})" if detail else ""),
            **kw,
        )


def _n(x: int | None) -> str:
    return "?" if x is None else str(x)
