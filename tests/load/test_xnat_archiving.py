"""XNAT archives slowly and inside the import request (issue 13): the loader follows a late
answer through the prearchive and the archive, counts the DICOM resource only, and deletes
nothing — against real Orthanc and the stand-in XNAT over real sockets."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from connectors.load.runner import run_load
from connectors.testbed.cohort import Cohort
from connectors.warehouse.runs import RunContext
from connectors.warehouse.store import Warehouse
from tests.support.fault_helpers import (
    Template,
    assert_nothing_lost,
    attempts,
    fault_settings,
    invoke,
    sessions_by_uid,
    workspace_from,
)
from tests.support.load_helpers import (
    expected_files,
    load_settings_for,
    pick_studies,
    write_manifest,
)
from tests.support.xnat_fixtures import StandinHandle

pytestmark = pytest.mark.orthanc


def _load(settings: Any) -> tuple[int, dict[str, Any], Exception | None]:
    return invoke(settings, "load", lambda rc: run_load(rc, "direct", build_manifest=False))


def _archive_outlasting(template: Template, standin: StandinHandle) -> float:
    """Make every study's archive take 0.4-0.8 s; returns a client timeout shorter than any."""
    sizes = [expected_files(s) for s in template.studies]
    per_file = 0.8 / max(sizes)
    standin.server.app.archive.seconds_per_file = per_file
    return 0.5 * per_file * min(sizes)


def _deletes(standin: StandinHandle) -> list[tuple[str, str, int]]:
    log = standin.server.app.request_log
    return [r for r in log if r[0] == "DELETE" and "JSESSION" not in r[1]]


@pytest.mark.slow  # over 5 s (pytest --durations): not in the fast set
def test_late_import_answer_is_followed_until_xnat_has_archived_it(
    template: Template, orthanc: Any, standin_xnat: StandinHandle, tmp_path: Path
) -> None:
    """It follows an import whose answer comes after the client's timeout (XNAT still
    archiving, its prearchive row ARCHIVING) until the session is archived, records it
    'loaded' in the same attempt, and deletes nothing (no prearchive row, no session)."""
    timeout = _archive_outlasting(template, standin_xnat)
    settings = fault_settings(
        workspace_from(template, tmp_path),
        orthanc,
        standin_xnat,
        xnat={"timeout": timeout, "archive_poll_seconds": 0.05},
    )
    code, run, err = _load(settings)
    assert (code, run["loaded"], run["failed"]) == (0, 3, 0), err
    rows = attempts(settings)
    loaded = [a for a in rows if a["outcome"] == "loaded"]
    assert len(loaded) == 3
    assert all(a["files_archived"] == a["files_expected"] for a in loaded)
    # a try may time out before XNAT shows its prearchive row (a busy machine): it is then a
    # non-final 'timeout', and the next try finds the archive instead of sending it again
    assert {a["reason_category"] for a in rows if a["outcome"] == "failed"} <= {"timeout"}
    assert not _deletes(standin_xnat)
    assert all(n == 1 for n in sessions_by_uid(standin_xnat).values())
    assert_nothing_lost(settings, standin_xnat, template.studies, runs=[run])


@pytest.mark.slow  # over 5 s (pytest --durations): not in the fast set
def test_archive_still_running_past_archive_wait_is_a_timeout_and_nothing_removed(
    template: Template, orthanc: Any, standin_xnat: StandinHandle, tmp_path: Path
) -> None:
    """It records 'timeout' (transient) when XNAT is still archiving after [xnat]
    archive_wait, without deleting the ARCHIVING row or sending the study again while it
    archives; XNAT finishes, and the study is in XNAT once."""
    timeout = _archive_outlasting(template, standin_xnat)
    settings = fault_settings(
        workspace_from(template, tmp_path),
        orthanc,
        standin_xnat,
        xnat={"timeout": timeout, "archive_wait": 0.1, "archive_poll_seconds": 0.05},
        retries=0,
    )
    _, run, _ = _load(settings)
    assert run["failed"] >= 1
    assert {a["reason_category"] for a in attempts(settings) if a["outcome"] == "failed"} == {
        "timeout"
    }
    assert not _deletes(standin_xnat)
    deadline = time.monotonic() + 30
    while sum(sessions_by_uid(standin_xnat).values()) < 3:
        assert time.monotonic() < deadline, "XNAT never finished archiving"
        time.sleep(0.05)
    imports = [r for r in standin_xnat.server.app.request_log if r[1] == "/data/services/import"]
    assert len(imports) == 3  # one each: nothing sent again while XNAT archived it
    assert_nothing_lost(settings, standin_xnat, template.studies, runs=[run])


def test_fewer_files_archived_is_recorded_with_both_counts_and_nothing_deleted(
    template: Template, orthanc: Any, standin_xnat: StandinHandle, tmp_path: Path
) -> None:
    """It records 'archive_count_differs' with the files sent and the DICOM files XNAT holds
    (the scans' SNAPSHOTS never counted), keeps the session and deletes nothing."""
    standin_xnat.faults.drop_files = 1
    settings = fault_settings(workspace_from(template, tmp_path), orthanc, standin_xnat)
    code, run, _ = _load(settings)
    assert (code, run["failed"]) == (1, 3)
    rows = attempts(settings)
    assert [a["reason_category"] for a in rows] == ["archive_count_differs"] * 3
    assert all(a["files_archived"] == a["files_received"] - 1 for a in rows)
    assert all(a["xnat_session_id"] for a in rows)
    assert not _deletes(standin_xnat)
    assert sum(sessions_by_uid(standin_xnat).values()) == 3


def test_labels_xnat_cleans_load_once_and_a_rerun_finds_them(
    orthanc: Any, pacs_cohort: Cohort, standin_xnat: StandinHandle, tmp_path: Path
) -> None:
    """It loads studies whose session and subject labels hold characters XNAT replaces at
    archive time, verifies the sessions under XNAT's labels (found by Study UID), and a
    rerun finds them already present instead of sending them again."""
    studies = pick_studies(pacs_cohort, 2, offset=20)
    settings = load_settings_for(tmp_path, orthanc, standin_xnat)
    write_manifest(settings, pacs_cohort, studies)
    with Warehouse(settings.warehouse_path).connect() as con:
        con.execute(
            "update main.ingest_manifest set session_label = session_label || ' a.b/c:d^e', "
            "subject_label = subject_label || ',x'"
        )
    rc = RunContext(settings=settings, command="load", arguments=[])
    first = run_load(rc, "direct", build_manifest=False)
    assert (first["loaded"], first["failed"]) == (2, 0)
    with standin_xnat.store.lock:
        labels = sorted(s.label for s in standin_xnat.store.sessions.values())
    assert labels == sorted(f"{s.accession_number}_a_b_c_d_e" for s in studies)
    again = run_load(
        RunContext(settings=settings, command="load", arguments=[]), "direct", build_manifest=False
    )
    assert (again["already_present"], again["loaded"]) == (2, 0)
    assert len(sessions_by_uid(standin_xnat)) == 2


def test_a_stale_receiving_row_does_not_hold_up_a_complete_session(
    template: Template, orthanc: Any, standin_xnat: StandinHandle, tmp_path: Path
) -> None:
    """It records a study 'loaded' as soon as its session holds every DICOM file sent, even
    with a prearchive row of the same study left RECEIVING by some earlier, broken upload
    (which it neither waits for nor deletes)."""
    from connectors.testbed.xnat_standin.store import PrearchiveEntry, Session

    first = template.studies[0]
    with standin_xnat.store.lock:
        stale = Session("", "HNC", "", "STALE", first.study_instance_uid, "CT")
        standin_xnat.store.prearchive.append(
            PrearchiveEntry(
                "HNC", "20200101_000000000", "STALE", "S", stale.uid, "RECEIVING", stale
            )
        )
    settings = fault_settings(
        workspace_from(template, tmp_path),
        orthanc,
        standin_xnat,
        xnat={"archive_wait": 0.3, "archive_poll_seconds": 0.05},
        retries=0,
    )
    code, run, err = _load(settings)
    assert (code, run["loaded"]) == (0, 3), err
    assert [e.status for e in standin_xnat.store.prearchive] == ["RECEIVING"]
    assert not _deletes(standin_xnat)
