"""Uploads in flight (``[load] uploads_in_flight``): direct mode sends several studies to XNAT
at once, against real Orthanc and the stand-in XNAT over real sockets, and never creates one
subject twice (xnat-web SubjectResource.handlePut looks a label up, then saves a new subject
without looking again: the stand-in's ``Store.put_subject`` does the same)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from connectors.load.runner import run_load
from connectors.testbed.cohort import Cohort, Study
from connectors.warehouse.runs import RunContext
from tests.support.load_helpers import attempts, load_settings_for, pick_studies, write_manifest
from tests.support.xnat_fixtures import StandinHandle

IMPORT = "/data/services/import"


def _one_patients_studies(cohort: Cohort, n: int) -> list[Study]:
    """``n`` usable studies of one patient (one subject in XNAT)."""
    usable = pick_studies(cohort, len(cohort.studies))
    by_patient = Counter(s.mrn for s in usable)
    mrn = next(m for m, k in by_patient.most_common() if k >= n)
    return [s for s in usable if s.mrn == mrn][:n]


@pytest.mark.orthanc
@pytest.mark.parametrize("in_flight", [1, 2])
def test_uploads_in_flight_overlap_up_to_the_setting(
    orthanc: Any, pacs_cohort: Cohort, standin_xnat: StandinHandle, tmp_path: Path, in_flight: int
) -> None:
    """With the import slowed, as many imports are served at once as ``uploads_in_flight``
    allows, never more, and every study is loaded and recorded once."""
    studies = pick_studies(pacs_cohort, 4)
    settings = load_settings_for(
        tmp_path, orthanc, standin_xnat, {"max_associations": 2}, uploads_in_flight=in_flight
    )
    write_manifest(settings, pacs_cohort, studies)
    standin_xnat.server.app.faults.slow(0.6, path=IMPORT)
    summary = run_load(RunContext(settings, "load", []), "direct", build_manifest=False)
    assert (summary["loaded"], summary["failed"]) == (4, 0)
    assert standin_xnat.server.app.peak_in_flight[IMPORT] == in_flight
    recorded = attempts(settings)
    assert sorted(a["study_instance_uid"] for a in recorded) == sorted(
        s.study_instance_uid for s in studies
    )
    assert not any((tmp_path / "work").rglob("*.dcm"))


@pytest.mark.orthanc
def test_two_uploads_of_one_new_subject_make_one_subject(
    orthanc: Any, pacs_cohort: Cohort, standin_xnat: StandinHandle, tmp_path: Path
) -> None:
    """Two studies of one patient uploaded at once: XNAT's subject PUT is check-then-create
    (widened here to 1.5 s), so two PUTs of the new label at once would make two subjects
    of that label; the loader creates subjects one at a time."""
    studies = _one_patients_studies(pacs_cohort, 2)
    settings = load_settings_for(
        tmp_path, orthanc, standin_xnat, {"max_associations": 2}, uploads_in_flight=2
    )
    rows = write_manifest(settings, pacs_cohort, studies)
    standin_xnat.store.subject_save_seconds = 1.5
    summary = run_load(RunContext(settings, "load", []), "direct", build_manifest=False)
    assert (summary["loaded"], summary["failed"]) == (2, 0)
    label = rows[0]["subject_label"]
    with standin_xnat.store.lock:
        subjects = [s for s in standin_xnat.store.subjects.values() if s.label == label]
        sessions = [x for x in standin_xnat.store.sessions.values() if x.subject_id]
    assert len(subjects) == 1
    assert {x.subject_id for x in sessions} == {subjects[0].id}
