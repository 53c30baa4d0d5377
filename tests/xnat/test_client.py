"""connectors/xnat.py against the stand-in over a real socket: credentials, login failures,
the project check, the streamed upload and its verification, and error translation."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors import PROJECT_ROOT
from connectors.errors import ConfigError, StudyFailed, XnatUnreachable
from connectors.load.retry_policy import RetryPolicy
from connectors.xnat.client import XnatClient, classify, credentials, xnat_label
from connectors.xnat.zipstream import ZipProgress, zip_stream
from tests.support.xnat_fixtures import StandinHandle, dicom_study, xnat_settings

POLICY = RetryPolicy.from_project(PROJECT_ROOT)  # the seed says which reasons are transient


def test_credentials_come_from_env_or_netrc(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """It reads XNAT_USER/XNAT_PASS, else ~/.netrc for the host, else says how to set them."""
    monkeypatch.setenv("XNAT_USER", "u1")
    monkeypatch.setenv("XNAT_PASS", "p1")
    c = credentials("https://xnat.example.org")
    assert (c.user, c.password) == ("u1", "p1")
    assert "p1" not in repr(c)
    monkeypatch.delenv("XNAT_USER")
    monkeypatch.delenv("XNAT_PASS")
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="XNAT_USER"):
        credentials("https://xnat.example.org")
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine xnat.example.org login u2 password p2\n")
    netrc.chmod(0o600)
    c = credentials("https://xnat.example.org")
    assert (c.user, c.password, c.source) == ("u2", "p2", "~/.netrc")


def test_login_failures_are_unreachable_without_the_password(
    standin_xnat: StandinHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It turns a refused login and a stopped server into XnatUnreachable (exit 3) whose
    message never holds the password, and an unknown project into ConfigError (exit 2)."""
    settings = xnat_settings(standin_xnat)
    monkeypatch.setenv("XNAT_PASS", "wrong-password-123")
    with pytest.raises(XnatUnreachable) as e:
        XnatClient(settings).__enter__()
    assert "wrong-password-123" not in str(e.value)
    assert e.value.exit_code == 3
    monkeypatch.setenv("XNAT_PASS", standin_xnat.password)
    with (
        pytest.raises(ConfigError, match="NOPE"),
        XnatClient(xnat_settings(standin_xnat, project="NOPE")) as client,
    ):
        client.check_project()
    standin_xnat.server.stop()
    with pytest.raises(XnatUnreachable, match="connection refused"):
        XnatClient(settings).__enter__()


def test_streamed_upload_is_archived_and_counted(
    standin_xnat: StandinHandle, tmp_path: Path
) -> None:
    """It streams a zip built on the fly into the archive, finds the session by label and
    counts its files; a 503 becomes a transient 'xnat_unavailable' StudyFailed and an answer
    that does not come in time a transient 'timeout'."""
    uid, files = dicom_study(tmp_path / "s", 5, series=2)
    with XnatClient(xnat_settings(standin_xnat)) as client:
        client.check_project()
        assert client.ensure_subject("9434765919").startswith("XNAT_S")
        progress = ZipProgress()
        uri = client.upload_zip(zip_stream(files, progress), "9434765919", "RA0001")
        assert uri == "/data/archive/projects/HNC/subjects/9434765919/experiments/RA0001"
        assert progress.files == 5
        row = client.find_session("RA0001")
        assert row is not None
        assert row["UID"] == uid
        assert row["subject_label"] == "9434765919"
        assert client.count_files(row["ID"]) == 5
        assert client.scan_count(row["ID"]) == 2
        assert client.find_session("RA0002") is None
        standin_xnat.faults.fail_next(503, 1, "/data/services/import")
        with pytest.raises(StudyFailed) as e:
            client.upload_zip(zip_stream(files), "9434765919", "RA0002")
        assert e.value.reason_category == "xnat_unavailable"
        assert POLICY.is_transient(e.value.reason_category)
        client.delete_session(row["ID"])
        assert client.find_session("RA0001") is None

        standin_xnat.faults.slow(2.0, "/data/services/import")
        with pytest.raises(StudyFailed) as slow:
            client.upload_zip(zip_stream(files), "9434765919", "RA0003", timeout=0.5)
        assert slow.value.reason_category == "timeout"
        assert POLICY.is_transient(slow.value.reason_category)


def test_classify_maps_xnat_answers_to_reason_categories() -> None:
    """It calls 409 and DICOM-zip's wrapped 400 conflicts, 5xx transient, others rejected,
    and a 423 (another request is archiving the session) busy, not a conflict; whether each
    is transient is the seed's to say."""
    assert classify(409, "") == "xnat_conflict"
    assert classify(400, "<h3>Failed to archive 1 of 1 session(s)</h3>") == "xnat_conflict"
    assert classify(503, "") == "xnat_unavailable"
    assert classify(423, "Duplicate archive attempt") == "xnat_busy"
    assert classify(400, "Unsupported format") == "rejected_by_xnat"
    assert not POLICY.is_transient("xnat_conflict")
    assert POLICY.is_transient("xnat_unavailable")
    assert POLICY.is_transient("xnat_busy")
    assert not POLICY.is_transient("rejected_by_xnat")


def test_labels_xnat_cleans_are_found_by_study_uid_then_cleaned_label(
    standin_xnat: StandinHandle, tmp_path: Path
) -> None:
    """It finds a session whose label and subject XNAT cleaned at archive time (every
    character cleanValue replaces) by Study UID, and by the cleaned label when asked for a
    UID XNAT does not hold; a subject differing only in case is the same subject."""
    dirty = "RA 1`~@#$%^&*()+=[]{}|\\/?:;\"',.<>x"
    assert xnat_label(dirty) == "RA_1" + "_" * (len(dirty) - 5) + "x"
    uid, files = dicom_study(tmp_path / "s", 2)
    with XnatClient(xnat_settings(standin_xnat)) as client:
        client.upload_zip(zip_stream(files), "Subj.One", dirty)
        assert client.find_session(dirty) is None  # what the old client looked for
        row = client.find_study(uid, dirty)
        assert row is not None
        assert (row["label"], row["UID"], row["subject_label"]) == (
            xnat_label(dirty),
            uid,
            "Subj_One",
        )
        assert client.find_study("1.2.3.4.5", dirty) == row  # by the cleaned label
        assert client.count_files(row["ID"]) == 2
        uid2, more = dicom_study(tmp_path / "t", 1, accession="ACC2")
        client.upload_zip(zip_stream(more), "subj.one", "RA2")
        second = client.find_study(uid2, "RA2")
        assert second is not None
        assert second["subject_ID"] == row["subject_ID"]  # matched ignoring case


def test_an_expired_session_logs_in_again_once(
    standin_xnat: StandinHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It logs in again, once and without a word to the caller, when XNAT answers 401 to an
    expired JSESSION; an upload whose session expired fails as transient (its body cannot
    be sent twice) after logging in again; refused credentials on the new login are fatal."""
    _, files = dicom_study(tmp_path / "s", 2)
    app = standin_xnat.server.app
    app.session_seconds = 60.0

    def expire() -> None:  # every session opened so far is older than XNAT keeps one
        app.session_started = dict.fromkeys(app.session_started, -1e9)

    with XnatClient(xnat_settings(standin_xnat)) as client:
        client.check_project()
        logins = app.logins
        expire()
        assert client.find_session("RA0001") is None
        assert app.logins == logins + 1
        client.upload_zip(zip_stream(files), "S1", "RA0001")
        assert client.find_session("RA0001") is not None
        expire()
        with pytest.raises(StudyFailed) as expired:
            client.upload_zip(zip_stream(files), "S1", "RA0002")
        assert expired.value.reason_category == "xnat_unavailable"
        assert POLICY.is_transient(expired.value.reason_category)
        assert client.find_session("RA0001") is not None
        expire()
        monkeypatch.setenv("XNAT_PASS", "changed-meanwhile")
        with pytest.raises(XnatUnreachable, match="401"):
            client.find_session("RA0001")


def test_an_xnat_gone_before_the_end_leaves_nothing_to_raise_at_garbage_collection(
    standin_xnat: StandinHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """XNAT stops while a client is open: leaving the client raises nothing, and nothing raises
    later when Python collects the xnatpy session (its ``__del__`` would DELETE the JSESSION of a
    server that is gone and print "Exception ignored" at a random moment)."""
    import gc
    import sys

    monkeypatch.setenv("XNAT_PASS", standin_xnat.password)
    ignored: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", ignored.append)
    client = XnatClient(xnat_settings(standin_xnat))
    with client:
        session = client._session
        assert session.interface is not None
        standin_xnat.server.stop()
    assert session.interface is None
    del session
    gc.collect()
    assert ignored == []
