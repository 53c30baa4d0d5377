"""DQR mode against the stand-in plugin as NrgXnat/dicom-query-retrieve behaves (issue 13):
the destination from /xapi/dicomscp, requests followed by requestId through new history rows,
a failed C-MOVE retried by the plugin, several requests in flight; real Orthanc as the PACS."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import requests

from connectors.load.runner import run_load
from connectors.testbed.cohort import Cohort
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

pytestmark = pytest.mark.orthanc


def _standin(orthanc: Any, factory: Any) -> StandinHandle:
    pacs = [pacs_entry(orthanc, "ORTHANC")]
    return factory(pacs=pacs)  # type: ignore[no-any-return]


def test_dqr_request_without_a_destination_is_refused(
    orthanc: Any, standin_xnat_factory: Any
) -> None:
    """It refuses an import request that names no receiving SCP (aeTitle, port), and one
    naming a receiver XNAT does not have, as the plugin does (400)."""
    h = _standin(orthanc, standin_xnat_factory)
    body = {"pacsId": 1, "projectId": "HNC", "studies": [{"studyInstanceUid": "1.2.3"}]}
    url = f"{h.url}/xapi/dqr/import"
    auth = (h.user, h.password)
    assert requests.post(url, json=body, auth=auth, timeout=10).status_code == 400
    wrong = {**body, "aeTitle": "NOSUCH", "port": 104}
    assert requests.post(url, json=wrong, auth=auth, timeout=10).status_code == 400
    right = {**body, "aeTitle": "XNATDQR", "port": 8104}
    queued = requests.post(url, json=right, auth=auth, timeout=10)
    assert queued.status_code == 200
    assert queued.json()[0]["requestId"]


def test_dqr_failed_once_is_retried_by_the_plugin_and_several_run_at_once(
    orthanc: Any, pacs_cohort: Cohort, standin_xnat_factory: Any, tmp_path: Path
) -> None:
    """It loads every study with two requests in flight while the plugin's first C-MOVE
    fails and is retried as a new history row of the same requestId; the loader follows by
    requestId and judges by the archived session's DICOM count, not a RECEIVED status (the
    plugin never sets one)."""
    h = _standin(orthanc, standin_xnat_factory)
    h.server.app.dqr.fail_next = 1
    studies = pick_studies(pacs_cohort, 3, offset=30)
    base = load_settings_for(tmp_path, orthanc, h)
    settings = dataclasses.replace(base, xnat=dataclasses.replace(base.xnat, dqr_in_flight=2))
    write_manifest(settings, pacs_cohort, studies)
    summary = run_load(
        RunContext(settings=settings, command="load", arguments=[]), "dqr", build_manifest=False
    )
    assert (summary["loaded"], summary["failed"]) == (3, 0)
    rows = attempts(settings)
    assert [a["outcome"] for a in rows] == ["loaded"] * 3
    with h.store.lock:
        history = list(h.store.dqr_history.values())
        by_label = {s.label: s for s in h.store.sessions.values()}
    assert sorted(r.status for r in history) == ["FAILED", "ISSUED", "ISSUED", "ISSUED"]
    failed = next(r for r in history if r.status == "FAILED")
    assert sum(r.request_id == failed.request_id for r in history) == 2  # retried: a new row
    assert not h.store.dqr
    for s in studies:
        assert by_label[s.accession_number].file_count() == expected_files(s)
