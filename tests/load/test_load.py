"""``pacs2xnat load`` against real Orthanc (the test-bed cohort) and the stand-in XNAT over
real sockets: direct with C-GET and C-MOVE, dqr, reruns, and what is recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from connectors import console
from connectors.errors import XnatUnreachable
from connectors.load.runner import run_load
from connectors.testbed.cohort import Cohort
from connectors.testbed.orthanc import free_port
from connectors.testbed.xnat_standin.dqr import pacs_entry
from connectors.warehouse.runs import RunContext
from tests.support.load_helpers import (
    attempts,
    expected_files,
    load_settings_for,
    pick_studies,
    write_manifest,
)
from tests.support.xnat_fixtures import StandinHandle

MOVE_AET = "P2X_LOADER"


def _rc(settings: Any) -> RunContext:
    return RunContext(settings=settings, command="load", arguments=[])


def _sessions(standin: StandinHandle) -> dict[str, Any]:
    with standin.store.lock:
        return {s.label: s for s in standin.store.sessions.values()}


@pytest.mark.slow
@pytest.mark.orthanc
def test_direct_c_get_loads_verifies_and_a_rerun_skips(
    orthanc: Any, pacs_cohort: Cohort, standin_xnat: StandinHandle, tmp_path: Path
) -> None:
    """It retrieves, uploads and verifies every study (subject = NHS number, session =
    accession number, file count = the PACS's count), records one 'loaded' attempt each,
    leaves no temporary files, and a second run uploads nothing again."""
    studies = pick_studies(pacs_cohort, 4)
    settings = load_settings_for(tmp_path, orthanc, standin_xnat)
    rows = write_manifest(settings, pacs_cohort, studies)
    summary = run_load(_rc(settings), "direct", build_manifest=False)
    assert (summary["loaded"], summary["failed"]) == (4, 0)
    assert "exit_code" not in summary
    sessions = _sessions(standin_xnat)
    assert sorted(sessions) == sorted(r["session_label"] for r in rows)
    for study, row in zip(studies, rows, strict=True):
        got = sessions[row["session_label"]]
        assert got.uid == study.study_instance_uid
        assert got.file_count() == expected_files(study)
        assert standin_xnat.store.subjects[got.subject_id].label == row["subject_label"]
    recorded = attempts(settings)
    assert [a["outcome"] for a in recorded] == ["loaded"] * 4
    assert all(a["files_archived"] == a["files_expected"] for a in recorded)
    assert all(a["retrieve_method"] == "c-get" and a["bytes_transferred"] > 0 for a in recorded)
    assert not any((tmp_path / "work").rglob("*.dcm"))

    again = run_load(_rc(settings), "direct", build_manifest=False)
    assert (again["loaded"], again["already_present"]) == (0, 4)
    assert len(_sessions(standin_xnat)) == 4
    imports = [r for r in standin_xnat.server.app.request_log if r[1] == "/data/services/import"]
    assert len(imports) == 4


@pytest.mark.orthanc
def test_direct_c_move_to_our_storage_scp(
    orthanc: Any,
    pacs_cohort: Cohort,
    standin_xnat: StandinHandle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """It loads studies retrieved by C-MOVE to our own storage SCP (Orthanc knows our AE),
    showing the progress bar (studies done/total, MB/s) and the summary table on stderr."""
    monkeypatch.setattr(console, "progress_enabled", lambda: True)
    port = free_port()
    orthanc.add_modality(MOVE_AET, MOVE_AET, "127.0.0.1", port)
    studies = pick_studies(pacs_cohort, 2, offset=4)
    pacs = {"retrieve": "c-move", "move_destination": MOVE_AET, "receive_port": port}
    settings = load_settings_for(tmp_path, orthanc, standin_xnat, pacs)
    write_manifest(settings, pacs_cohort, studies)
    summary = run_load(_rc(settings), "direct", build_manifest=False)
    assert summary["loaded"] == 2
    assert {a["retrieve_method"] for a in attempts(settings)} == {"c-move"}
    sessions = _sessions(standin_xnat)
    assert [sessions[s.accession_number].file_count() for s in studies] == [
        expected_files(s) for s in studies
    ]
    err = capsys.readouterr().err
    assert "2/2" in err
    assert "MB/s" in err
    assert "already_present" in err


@pytest.mark.slow
@pytest.mark.orthanc
def test_dqr_mode_pulls_through_xnat_and_a_stuck_request_times_out(
    orthanc: Any, pacs_cohort: Cohort, standin_xnat_factory: Any, tmp_path: Path
) -> None:
    """It asks the DQR plugin for each study with the subject/session relabel map, waits for
    the session, and fails a request that stays ISSUED with 'timeout'."""
    pacs = [pacs_entry(orthanc, "ORTHANC")]
    standin = standin_xnat_factory(pacs=pacs)
    studies = pick_studies(pacs_cohort, 3, offset=6)
    settings = load_settings_for(tmp_path, orthanc, standin)
    rows = write_manifest(settings, pacs_cohort, studies[:2])
    summary = run_load(_rc(settings), "dqr", build_manifest=False)
    assert summary["loaded"] == 2
    sessions = _sessions(standin)
    for study, row in zip(studies, rows, strict=False):
        got = sessions[row["session_label"]]
        assert got.file_count() == expected_files(study)
        assert standin.store.subjects[got.subject_id].label == row["subject_label"]
    assert not standin.store.dqr  # done requests leave the queue; history stays ISSUED
    assert {r.status for r in standin.store.dqr_history.values()} == {"ISSUED"}

    standin.faults.dqr_stuck = True
    write_manifest(settings, pacs_cohort, studies[2:])
    stuck = run_load(_rc(settings), "dqr", build_manifest=False)
    assert (stuck["failed"], stuck["exit_code"]) == (1, 1)
    last = attempts(settings)[-1]
    assert (last["outcome"], last["reason_category"], last["mode"]) == ("failed", "timeout", "dqr")
    assert "ISSUED" in last["message"]
    assert studies[2].accession_number not in _sessions(standin)


@pytest.mark.slow
@pytest.mark.orthanc
def test_transient_xnat_errors_are_retried_then_recorded(
    orthanc: Any, pacs_cohort: Cohort, standin_xnat: StandinHandle, tmp_path: Path
) -> None:
    """It retries a 503 on upload and loads the study, recording the failed tries; a 500 that
    does not go away fails the study as 'xnat_unavailable' after the retries (exit code 1)."""
    studies = pick_studies(pacs_cohort, 2, offset=9)
    settings = load_settings_for(tmp_path, orthanc, standin_xnat, retries=2)
    write_manifest(settings, pacs_cohort, studies[:1])
    standin_xnat.faults.fail_next(503, 2, "/data/services/import")
    ok = run_load(_rc(settings), "direct", build_manifest=False)
    assert ok["loaded"] == 1
    assert [(a["outcome"], a["reason_category"]) for a in attempts(settings)] == [
        ("failed", "xnat_unavailable"),
        ("failed", "xnat_unavailable"),
        ("loaded", None),
    ]
    write_manifest(settings, pacs_cohort, studies[1:])
    standin_xnat.faults.fail_next(500, 99, "/data/services/import")
    bad = run_load(_rc(settings), "direct", build_manifest=False)
    assert (bad["failed"], bad["exit_code"]) == (1, 1)
    tail = attempts(settings)[-3:]
    assert [a["reason_category"] for a in tail] == ["xnat_unavailable"] * 3
    assert studies[1].accession_number not in _sessions(standin_xnat)


@pytest.mark.slow
@pytest.mark.orthanc
def test_xnat_failing_study_after_study_stops_the_run(
    orthanc: Any, pacs_cohort: Cohort, standin_xnat: StandinHandle, tmp_path: Path
) -> None:
    """It stops with XnatUnreachable (exit 3) once three studies in a row failed as
    'xnat_unavailable', recording them, instead of retrieving the rest for nothing. An upload
    already in flight beside the third (``uploads_in_flight`` = 2) ends and is recorded too."""
    studies = pick_studies(pacs_cohort, 5, offset=16)
    settings = load_settings_for(tmp_path, orthanc, standin_xnat, retries=0)
    write_manifest(settings, pacs_cohort, studies)
    standin_xnat.faults.fail_next(503, 999, "/data/services/import")
    with pytest.raises(XnatUnreachable, match="3 studies in a row"):
        run_load(_rc(settings), "direct", build_manifest=False)
    recorded = attempts(settings)
    assert settings.load.uploads_in_flight == 2
    assert len(recorded) in (3, 4)  # never the fifth: no upload starts once the run stops
    assert {a["reason_category"] for a in recorded} == {"xnat_unavailable"}
    assert not any((tmp_path / "work").rglob("*.dcm"))


@pytest.mark.slow
@pytest.mark.orthanc
def test_conflict_incomplete_retrieve_and_partial_archive_fail_cleanly(
    orthanc: Any, pacs_cohort: Cohort, standin_xnat: StandinHandle, tmp_path: Path
) -> None:
    """It records a label held by another study as 'xnat_conflict' without uploading, fewer
    instances than the PACS promised as 'retrieve_incomplete', and a session archived with
    fewer files than sent as 'archive_count_differs' with both counts, the session kept."""
    studies = pick_studies(pacs_cohort, 3, offset=11)
    settings = load_settings_for(tmp_path, orthanc, standin_xnat, retries=1)
    conflict, short, partial = studies
    from connectors.testbed.xnat_standin.store import Session

    with standin_xnat.store.lock:
        standin_xnat.store.archive(
            Session("", "HNC", "", conflict.accession_number, "1.2.3.999", "CT"), "OTHER", False
        )
    expected = {short.study_instance_uid: expected_files(short) + 2}
    write_manifest(settings, pacs_cohort, [conflict, short], expected)
    first = run_load(_rc(settings), "direct", build_manifest=False)
    assert first["failed"] == 2
    finals = {a["session_label"]: a for a in attempts(settings)}
    assert finals[conflict.accession_number]["reason_category"] == "xnat_conflict"
    assert finals[short.accession_number]["reason_category"] == "retrieve_incomplete"
    assert finals[short.accession_number]["files_expected"] == expected_files(short) + 2

    standin_xnat.faults.drop_files = 1
    write_manifest(settings, pacs_cohort, [partial])
    second = run_load(_rc(settings), "direct", build_manifest=False)
    assert second["failed"] == 1
    last = attempts(settings)[-1]
    assert last["reason_category"] == "archive_count_differs"
    assert (last["files_received"], last["files_archived"]) == (
        expected_files(partial),
        expected_files(partial) - 1,
    )
    assert "nothing was deleted" in last["message"]
    assert partial.accession_number in _sessions(standin_xnat)


def test_dry_run_and_limit_write_nothing(
    orthanc_free_settings: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """It prints the studies --dry-run would load (to stdout) and records no attempt."""
    settings, _cohort, studies = orthanc_free_settings
    summary = run_load(_rc(settings), "direct", limit=2, dry_run=True, build_manifest=False)
    assert (summary["studies"], summary["would_load"]) == (2, 2)
    out = capsys.readouterr().out
    assert studies[0].accession_number in out
    assert studies[2].accession_number not in out
    assert attempts(settings) == []


@pytest.fixture
def orthanc_free_settings(
    pacs_cohort: Cohort, standin_xnat: StandinHandle, tmp_path: Path
) -> tuple[Any, Cohort, list[Any]]:
    """Settings with a PACS that is never contacted (dry runs and XNAT-down tests)."""

    class _NoPacs:
        host, port, aet = "127.0.0.1", 9, "NOPACS"

    studies = pick_studies(pacs_cohort, 3)
    settings = load_settings_for(tmp_path, _NoPacs(), standin_xnat)
    write_manifest(settings, pacs_cohort, studies)
    return settings, pacs_cohort, studies
