"""The PACS test bed itself: Orthanc, dcmqrscp and the demo PACS answer as real PACS do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, Verification

from connectors.pacs.net import has_tcp_nodelay, make_ae, open_association
from connectors.testbed.cohort import Cohort
from connectors.testbed.dicom_files import character_set, expected_instances
from tests.support.pacs_fixtures import PACS_INSTANCES_PER_SERIES, pacs_settings


def _find_uids(server: Any, mrn: str) -> tuple[set[str], bool]:
    """Study UIDs a bare pynetdicom C-FIND returns for one patient, and TCP_NODELAY."""
    ae = make_ae(pacs_settings(server), [StudyRootQueryRetrieveInformationModelFind, Verification])
    assoc = open_association(pacs_settings(server), ae)
    try:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.PatientID = mrn
        query.StudyInstanceUID = ""
        uids = {
            str(ident.StudyInstanceUID)
            for status, ident in assoc.send_c_find(
                query, StudyRootQueryRetrieveInformationModelFind
            )
            if status and status.Status in (0xFF00, 0xFF01)
        }
        return uids, has_tcp_nodelay(assoc)
    finally:
        assoc.release()


@pytest.mark.orthanc
def test_orthanc_holds_the_cohort_and_answers_c_find(orthanc: Any, pacs_cohort: Cohort) -> None:
    """It seeds Orthanc through REST and answers each patient's studies over DICOM."""
    assert len(orthanc.studies()) == len(pacs_cohort.studies)
    mrn = pacs_cohort.patients[0].mrn
    uids, nodelay = _find_uids(orthanc, mrn)
    assert uids == {s.study_instance_uid for s in pacs_cohort.studies_of(mrn)}
    assert nodelay


@pytest.mark.dcmtk
def test_dcmqrscp_answers_c_find(dcmqrscp: Any, pacs_cohort: Cohort) -> None:
    """It indexes the cohort with dcmqridx and dcmqrscp answers a Study Root C-FIND."""
    mrn = pacs_cohort.patients[1].mrn
    uids, _ = _find_uids(dcmqrscp, mrn)
    assert uids == {s.study_instance_uid for s in pacs_cohort.studies_of(mrn)}


def test_demo_pacs_records_requests_and_sets_nodelay(demo_pacs: Any, pacs_cohort: Cohort) -> None:
    """It answers C-FIND from its folder, records what it received, and sets TCP_NODELAY."""
    mrn = pacs_cohort.patients[2].mrn
    uids, nodelay = _find_uids(demo_pacs, mrn)
    assert uids == {s.study_instance_uid for s in pacs_cohort.studies_of(mrn)}
    assert nodelay
    [req] = demo_pacs.requests_of("C-FIND")
    assert req["calling_aet"] == "PACS2XNAT"
    assert req["identifier"]["PatientID"] == mrn


def test_demo_pacs_serves_c_get(demo_pacs: Any, pacs_cohort: Cohort, tmp_path: Path) -> None:
    """It sends every instance of a study over C-GET on the requestor's association."""
    from pynetdicom import build_role
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet

    from connectors.testbed.dicom_files import sop_classes

    study = pacs_cohort.studies[3]
    ae = AE(ae_title="PACS2XNAT")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for uid in sop_classes():
        ae.add_requested_context(uid)
    roles = [build_role(uid, scp_role=True) for uid in sop_classes()]
    got: list[str] = []

    def on_store(event: evt.Event) -> int:
        got.append(str(event.dataset.SOPInstanceUID))
        return 0x0000

    assoc = ae.associate(
        demo_pacs.host,
        demo_pacs.port,
        ae_title=demo_pacs.aet,
        ext_neg=roles,
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study.study_instance_uid
    statuses = [
        s.Status for s, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)
    ]
    assoc.release()
    assert statuses[-1] == 0x0000
    assert len(got) == expected_instances(study, PACS_INSTANCES_PER_SERIES)


def test_dicom_files_carry_latin1_and_utf8_names(
    pacs_files: list[Path], pacs_cohort: Cohort
) -> None:
    """It writes each patient's name in the character set chosen for it, readable back."""
    seen: dict[str, str] = {}
    for path in pacs_files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        seen[str(ds.SpecificCharacterSet)] = str(ds.PatientName)
        patient = pacs_cohort.patient(str(ds.PatientID))
        assert ds.SpecificCharacterSet == character_set(patient)
        assert str(ds.PatientName) == patient.dicom_name
    assert "ISO_IR 100" in seen
