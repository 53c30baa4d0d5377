"""``pacs2xnat demo serve --patients N --seed S``: the demo PACS holds that cohort, no other, and
the stand-in XNAT takes the printed login. Run as a user would, in its own process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

import pytest
import requests
from pydicom.dataset import Dataset
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, Verification

from connectors.pacs.net import make_ae, open_association
from connectors.testbed.cohort import make_cohort
from connectors.testbed.demo import DEMO_PACS_ENV
from connectors.testbed.orthanc import ORTHANC_BINARY
from tests.support.pacs_fixtures import pacs_settings
from tests.support.real_parts import require_binary

PATIENTS, SEED = 3, 5


def _all_studies(pacs: dict[str, Any]) -> set[tuple[str, str]]:
    """(Patient ID, Study UID) of every study a universal study-level C-FIND returns."""
    server = type("Server", (), pacs)
    settings = pacs_settings(server)
    assoc = open_association(
        settings, make_ae(settings, [StudyRootQueryRetrieveInformationModelFind, Verification])
    )
    try:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.PatientID = ""
        query.StudyInstanceUID = ""
        return {
            (str(ident.PatientID), str(ident.StudyInstanceUID))
            for status, ident in assoc.send_c_find(
                query, StudyRootQueryRetrieveInformationModelFind
            )
            if status and status.Status in (0xFF00, 0xFF01)
        }
    finally:
        assoc.release()


@pytest.mark.parametrize(
    "pacs_kind", ["embedded", pytest.param("orthanc", marks=pytest.mark.orthanc)]
)
def test_demo_serve_serves_a_cohort_of_the_size_asked(pacs_kind: str) -> None:
    if pacs_kind == "orthanc":
        require_binary(ORTHANC_BINARY, "orthanc")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PACS2XNAT", "XNAT_"))}
    env[DEMO_PACS_ENV] = pacs_kind
    command = [sys.executable, "-m", "connectors.app.cli", "demo", "serve"]
    args = ["--patients", str(PATIENTS), "--seed", str(SEED), "--json"]
    proc = subprocess.Popen(
        [*command, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else ""
        info = json.loads(line)
        assert info["pacs"]["aet"] == {"embedded": "DEMOPACS", "orthanc": "ORTHANC"}[pacs_kind]
        cohort = make_cohort(PATIENTS, SEED)
        assert cohort.studies
        assert _all_studies(info["pacs"]) == {(s.mrn, s.study_instance_uid) for s in cohort.studies}
        x = info["xnat"]
        answer = requests.get(
            f"{x['url']}/data/projects/{x['project']}",
            auth=(x["user"], x["password"]),
            params={"format": "json"},
            timeout=10,
        )
        assert answer.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0
