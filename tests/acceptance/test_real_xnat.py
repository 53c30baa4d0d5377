"""The acceptance run CSC makes before a first real load (``-m real_xnat --xnat-url URL
--xnat-project P``, see tests/support/real_xnat.py); each test also runs against the stand-in
in the normal suite. Synthetic DICOM only; only the given project is touched, and only what a
test created is removed."""

from __future__ import annotations

import uuid
from pathlib import Path

from connectors.warehouse.runs import RunContext
from connectors.xnat.client import XnatClient
from connectors.xnat.readiness import readiness
from connectors.xnat.sync import sync_sessions
from connectors.xnat.zipstream import zip_stream
from tests.support.real_xnat import Target
from tests.support.xnat_fixtures import dicom_study


def test_xnat_is_ready_for_a_load(target_xnat: Target) -> None:
    """It logs in, reads the project, and passes doctor's checks of version, auto-archive
    (direct mode) and the right to create subjects and sessions."""
    with XnatClient(target_xnat.settings) as client:
        client.check_project()
        checks = readiness(client, "direct")
    failed = [(name, detail, fix) for name, ok, detail, fix in checks if not ok]
    assert not failed, failed


def test_a_study_loads_is_found_counted_synced_and_removed(
    target_xnat: Target, tmp_path: Path
) -> None:
    """It uploads a small synthetic study under labels XNAT cleans, finds the session by
    Study UID with every DICOM file sent, finds it in a sync of the project, then removes
    the session and subject it created (nothing else)."""
    tag = uuid.uuid4().hex[:8].upper()
    subject, label = f"P2X_ACCEPT_{tag}", f"P2X ACCEPT.{tag}"
    uid, files = dicom_study(tmp_path / "s", 4, series=2, accession=tag, patient_id=subject)
    settings = target_xnat.settings
    with XnatClient(settings) as client:
        assert client.find_study(uid, label) is None
        created = client.http.put(
            f"{client.url}/data/projects/{client.project}/subjects/{subject}", timeout=60
        )
        assert created.status_code == 201, created.text  # ours: removed at the end
        try:
            client.upload_zip(zip_stream(files), subject, label)
            row = client.find_study(uid, label)
            assert row is not None
            assert row["label"] == f"P2X_ACCEPT_{tag}"  # XNAT's cleaned label
            assert client.count_files(row["ID"]) == 4
            assert client.scan_count(row["ID"]) == 2
            rc = RunContext(settings=settings, command="sync", arguments=[])
            done = sync_sessions(rc, client)
            assert done["sessions"] >= 1
            got = rc.warehouse.read_relation("raw.xnat_sessions", "where sync_id is not null")
            assert any(r["study_instance_uid"] == uid for r in got)
            client.delete_session(row["ID"])
            assert client.find_study(uid, label) is None
        finally:
            client.http.delete(
                f"{client.url}/data/projects/{client.project}/subjects/{subject}",
                params={"removeFiles": "true"},
                timeout=60,
            )


def test_dqr_plugin_and_receiver_are_configured(target_xnat: Target) -> None:
    """It finds the DQR plugin's PACS and the receiving SCP DQR imports need (on a real XNAT
    with --xnat-dqr; always on the stand-in)."""
    if not target_xnat.dqr:
        return  # the real XNAT without --xnat-dqr: DQR mode is not to be used there
    with XnatClient(target_xnat.settings) as client:
        checks = {name: (ok, detail) for name, ok, detail, _ in readiness(client, "dqr")}
    assert checks["DQR plugin and receiver"][0], checks
