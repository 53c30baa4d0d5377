"""The PACS connector against real PACS: Orthanc, dcmtk's dcmqrscp and the demo SCP."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from connectors.errors import PacsUnreachable, QueryFailed
from connectors.pacs.find import (
    Window,
    echo,
    find_patient,
    find_studies,
    has_tcp_nodelay,
    pacs_association,
)
from connectors.seams.pynetdicom_reactor import wakes_on_events
from connectors.testbed.cohort import Cohort
from connectors.testbed.dicom_files import expected_instances
from connectors.testbed.orthanc import free_port
from tests.support.pacs_fixtures import PACS_INSTANCES_PER_SERIES, pacs_settings


def _active(cohort: Cohort) -> list[str]:
    return [p.mrn for p in cohort.patients if p.status == "active"]


def _expected(cohort: Cohort, mrn: str, start: dt.date | None = None) -> set[str]:
    return {
        s.study_instance_uid
        for s in cohort.studies_of(mrn)
        if start is None or (s.study_date is not None and s.study_date >= start)
    }


def test_window_renders_dicom_date_ranges() -> None:
    """It writes all dates, open ends, a closed range and a single day as DICOM DA matches."""
    d1, d2 = dt.date(2026, 1, 5), dt.date(2026, 3, 1)
    assert Window().dicom() == ""
    assert Window(d1).dicom() == "20260105-"
    assert Window(None, d2).dicom() == "-20260301"
    assert Window(d1, d2).dicom() == "20260105-20260301"
    assert Window(d1, d1).dicom() == "20260105"


@pytest.mark.orthanc
def test_orthanc_answers_every_study_with_values_as_sent(orthanc: Any, pacs_cohort: Cohort) -> None:
    """It finds each patient's studies on Orthanc with every return key, on one association
    (TCP_NODELAY on, its reactor waking on events rather than polling)."""
    settings = pacs_settings(orthanc)
    assert echo(settings) == 0
    with pacs_association(settings) as assoc:
        assert has_tcp_nodelay(assoc)
        assert wakes_on_events(assoc)
        for mrn in _active(pacs_cohort)[:4]:
            rows = find_studies(assoc, mrn, Window())
            assert {r["study_instance_uid"] for r in rows} == _expected(pacs_cohort, mrn)
            by_uid = {s.study_instance_uid: s for s in pacs_cohort.studies_of(mrn)}
            for r in rows:
                study = by_uid[str(r["study_instance_uid"])]
                assert r["patient_id"] == mrn
                assert r["accession_number"] == study.accession_number
                assert r["study_date"] == study.dicom_study_date
                assert r["study_time"] == study.study_time.strftime("%H%M%S")
                assert r["study_description"] == study.description
                assert set(str(r["modalities_in_study"]).split("\\")) == set(study.modalities)
                assert int(str(r["number_of_study_related_instances"])) == expected_instances(
                    study, PACS_INSTANCES_PER_SERIES
                )
                assert r["patient_birth_date"] is not None


@pytest.mark.orthanc
def test_latin1_and_utf8_names_are_decoded(orthanc: Any, pacs_cohort: Cohort) -> None:
    """It decodes names stored as ISO_IR 100 and ISO_IR 192 to the same Unicode text."""
    accented = [p for p in pacs_cohort.patients if not p.dicom_name.isascii()]
    assert accented
    with pacs_association(pacs_settings(orthanc)) as assoc:
        for p in accented:
            names = {r["patient_name"] for r in find_studies(assoc, p.mrn, Window())}
            assert names == {p.dicom_name}


@pytest.mark.orthanc
def test_capped_orthanc_answer_is_split_until_all_fit(
    orthanc_factory: Any, pacs_files: Any, pacs_cohort: Cohort
) -> None:
    """It detects Orthanc's Cancel after LimitFindResults answers and splits the date range
    until nothing is missed."""
    capped = orthanc_factory(pacs_files, limit_find_results=3)
    mrn = max(_active(pacs_cohort), key=lambda m: len(pacs_cohort.studies_of(m)))
    with pacs_association(pacs_settings(capped)) as assoc:
        result = find_patient(assoc, mrn, Window())
        windowed = find_patient(assoc, mrn, Window(dt.date(2020, 1, 1), dt.date(2026, 11, 1)))
    assert {r["study_instance_uid"] for r in result.studies} == _expected(pacs_cohort, mrn)
    assert len(_expected(pacs_cohort, mrn)) > 3
    assert result.sub_queries > 1
    assert {r["study_instance_uid"] for r in windowed.studies} == _expected(
        pacs_cohort, mrn, dt.date(2020, 1, 1)
    )


def test_success_capped_pacs_needs_find_result_cap(
    demo_pacs_factory: Any, pacs_cohort: Cohort
) -> None:
    """It splits on exactly find_result_cap answers from a PACS that ends a capped answer
    with Success, which would otherwise lose studies without a trace."""
    pacs = demo_pacs_factory(result_cap=4, cap_status="success")
    mrn = max(_active(pacs_cohort), key=lambda m: len(pacs_cohort.studies_of(m)))
    with pacs_association(pacs_settings(pacs)) as assoc:
        naive = find_patient(assoc, mrn, Window())
        careful = find_patient(assoc, mrn, Window(), result_cap=4)
    assert len(naive.studies) == 4 < len(_expected(pacs_cohort, mrn))
    assert {r["study_instance_uid"] for r in careful.studies} == _expected(pacs_cohort, mrn)
    date_ranges = [r["identifier"]["StudyDate"] for r in pacs.requests_of("C-FIND")]
    assert date_ranges[:2] == ["", ""]
    assert len(date_ranges) == 1 + careful.sub_queries


def test_window_reaches_the_pacs_as_a_date_range(demo_pacs: Any, pacs_cohort: Cohort) -> None:
    """It sends the window as a StudyDate range with every return key, and the PACS's range
    matching returns only the studies from that date on."""
    mrn = _active(pacs_cohort)[0]
    start = dt.date(2025, 6, 1)
    with pacs_association(pacs_settings(demo_pacs)) as assoc:
        rows = find_studies(assoc, mrn, Window(start))
    [req] = demo_pacs.requests_of("C-FIND")
    assert req["identifier"]["StudyDate"] == "20250601-"
    assert req["identifier"]["PatientID"] == mrn
    assert req["identifier"]["QueryRetrieveLevel"] == "STUDY"
    for key in ("AccessionNumber", "ModalitiesInStudy", "NumberOfStudyRelatedInstances"):
        assert key in req["identifier"]
    assert {r["study_instance_uid"] for r in rows} == _expected(pacs_cohort, mrn, start)


@pytest.mark.dcmtk
def test_dcmqrscp_missing_return_keys_are_none(dcmqrscp: Any, pacs_cohort: Cohort) -> None:
    """It keeps studies whose answer lacks return keys (dcmqrscp does not send Modalities in
    Study), storing None for what was not sent."""
    mrn = _active(pacs_cohort)[1]
    with pacs_association(pacs_settings(dcmqrscp)) as assoc:
        rows = find_studies(assoc, mrn, Window())
    assert {r["study_instance_uid"] for r in rows} == _expected(pacs_cohort, mrn)
    assert all(r["modalities_in_study"] in (None, "") for r in rows)
    assert all(r["study_date"] for r in rows)


@pytest.mark.parametrize(("status", "transient"), [(0xA700, True), (0xC000, False)])
def test_failure_status_raises_query_failed(
    demo_pacs_factory: Any, pacs_cohort: Cohort, status: int, transient: bool
) -> None:
    """It turns a failure status into QueryFailed with the hex code; out of resources is
    worth retrying, unable to process is not."""
    pacs = demo_pacs_factory(find_status=status)
    with pacs_association(pacs_settings(pacs)) as assoc, pytest.raises(QueryFailed) as info:
        find_patient(assoc, _active(pacs_cohort)[0], Window())
    assert info.value.status_code == f"0x{status:04X}"
    assert info.value.transient is transient


def test_dimse_timeout_is_a_transient_failure(demo_pacs_factory: Any, pacs_cohort: Cohort) -> None:
    """It reports a PACS that does not answer within the DIMSE timeout as a lost association."""
    pacs = demo_pacs_factory(latency=2.0)
    settings = pacs_settings(pacs, dimse_timeout=0.5)
    with pacs_association(settings) as assoc, pytest.raises(QueryFailed) as info:
        find_patient(assoc, _active(pacs_cohort)[0], Window())
    assert info.value.transient
    assert info.value.status_code is None


def test_wildcard_mrn_is_never_sent(demo_pacs: Any) -> None:
    """It refuses an MRN holding a DICOM wildcard, which would match other patients."""
    with pacs_association(pacs_settings(demo_pacs)) as assoc, pytest.raises(QueryFailed):
        find_patient(assoc, "RA12*", Window())
    assert demo_pacs.requests_of("C-FIND") == []


def test_closed_port_is_unreachable_naming_host_and_aets() -> None:
    """It raises PacsUnreachable naming host, port and both AE titles when nothing listens."""

    class Nowhere:
        host, port, aet = "127.0.0.1", free_port(), "NOWHERE"

    with pytest.raises(PacsUnreachable) as info:
        echo(pacs_settings(Nowhere(), acse_timeout=2.0))
    text = str(info.value)
    assert f"127.0.0.1:{Nowhere.port}" in text
    assert "'NOWHERE'" in text
    assert "'PACS2XNAT'" in text


@pytest.mark.orthanc
def test_wrong_called_aet_is_rejected(orthanc_factory: Any) -> None:
    """It reports Orthanc's rejection of a wrong called AE title (DicomCheckCalledAet)."""
    strict = orthanc_factory(aet="STRICTPACS", check_called_aet=True)
    assert echo(pacs_settings(strict)) == 0
    with pytest.raises(PacsUnreachable) as info:
        echo(pacs_settings(strict, called_aet="WRONGAET"))
    assert "check that the PACS knows our AE title 'PACS2XNAT'" in str(info.value)
    assert "its AE title is 'WRONGAET'" in str(info.value)
