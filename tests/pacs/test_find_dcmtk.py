"""The query's findscu back end (``[pacs] query_backend = "dcmtk"``) against real PACS:
Orthanc, dcmtk's dcmqrscp and the in-process demo SCP (for the statuses and faults it can be
told to give). What findscu brings back must be what pynetdicom brings back, answer by answer."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from pydicom import dcmwrite
from pydicom.dataset import Dataset

from connectors.errors import PacsUnreachable
from connectors.pacs.dcmtk_tools import find_tool
from connectors.pacs.find import Window, find_patient, pacs_association, study_query
from connectors.pacs.find_dcmtk import findscu_batch, identifier_bytes, parse_log, status_code
from connectors.testbed.cohort import Cohort
from connectors.testbed.orthanc import free_port
from tests.support.pacs_fixtures import pacs_settings


def _active(cohort: Cohort) -> list[str]:
    return sorted(p.mrn for p in cohort.patients if p.status == "active")


def _rows(rows: list[dict[str, str | None]]) -> list[tuple[tuple[str, str | None], ...]]:
    return sorted(tuple(sorted(r.items())) for r in rows)


def _findscu() -> str:
    return find_tool("findscu", "query_backend")


@pytest.mark.parametrize("server", ["orthanc", "dcmqrscp"])
def test_findscu_brings_back_what_pynetdicom_does(
    server: str, request: pytest.FixtureRequest, pacs_cohort: Cohort
) -> None:
    """Every answer, every return key, names decoded the same (ISO_IR 100 and 192), for a
    batch on one association; a patient the PACS does not know has none, with Success."""
    pacs = request.getfixturevalue(server)
    settings = pacs_settings(pacs)
    accented = [p.mrn for p in pacs_cohort.patients if not p.dicom_name.isascii()]
    mrns = [*sorted({*_active(pacs_cohort)[:6], *accented[:2]}), "NOSUCHPATIENT"]
    answers = findscu_batch(_findscu(), settings.pacs, [study_query(m, Window()) for m in mrns])
    assert len(answers) == len(mrns)
    with pacs_association(settings) as assoc:
        for mrn, answer in zip(mrns, answers, strict=True):
            expected = find_patient(assoc, mrn, Window()).studies
            assert answer.final == 0x0000
            assert _rows(answer.rows) == _rows(expected), mrn
    assert sum(len(a.rows) for a in answers) > len(mrns)  # the comparison compared something


def test_findscu_without_a_pacs_is_unreachable() -> None:
    """Nobody listening: ``PacsUnreachable`` naming host, port and both AE titles."""

    class Down:
        host, port, aet = "127.0.0.1", free_port(), "HOSPITALPACS"

    settings = pacs_settings(Down(), acse_timeout=2.0)
    with pytest.raises(PacsUnreachable) as e:
        findscu_batch(_findscu(), settings.pacs, [study_query("MRN1", Window())])
    assert f"127.0.0.1:{Down.port}" in str(e.value)
    assert "'HOSPITALPACS'" in str(e.value)
    assert "'PACS2XNAT'" in str(e.value)


def test_status_words_are_dcmtks() -> None:
    """The words DU_cfindStatusString gives each status (dcmnet/libsrc/diutil.cc), read back;
    what is not dcmtk's is None (the patient is then asked again over pynetdicom)."""
    assert status_code("Success") == 0x0000
    assert status_code("Cancel: MatchingTerminatedDueToCancelRequest") == 0xFE00
    assert status_code("Refused: OutOfResources") == 0xA700
    assert status_code("Failed: UnableToProcess") == 0xC000
    assert status_code("Unknown Status: 0xb000") == 0xB000
    assert status_code("something else") is None
    files, finals = parse_log("I: Sending Find Request (MsgID 1)\n", 2)
    assert files == [[], []]  # cut short: neither answered
    assert finals == [None, None]


def test_query_files_are_the_bytes_dcmwrite_writes() -> None:
    """The query files findscu reads are built without pydicom's writer, byte for byte what
    ``dcmwrite`` writes for every study-level identifier (MRNs of odd and even length, open
    and closed windows, time ranges, odd-length values and UI); a value or element it does not cover
    (non-ASCII text, a character set, a sequence) is left to dcmwrite (None)."""
    windows = [
        Window(None, None),
        Window(dt.date(2020, 1, 1), None),
        Window(None, dt.date(2021, 12, 31)),
        Window(dt.date(2019, 2, 3), dt.date(2019, 2, 3)),
    ]
    checked = 0
    for mrn in ("A", "AB", "MRN000123", "12345678901", "X-1/2 3"):
        for window in windows:
            for time in ("", "080000-120000", "080000-1200"):
                ds = study_query(mrn, window, time)
                if time == "080000-1200":
                    ds.StudyInstanceUID = "1.2.3"  # odd: NUL-padded
                buf = io.BytesIO()
                dcmwrite(buf, ds, implicit_vr=False, little_endian=True)
                assert identifier_bytes(ds) == buf.getvalue(), (mrn, window, time)
                checked += 1
    assert checked == 60

    accented = study_query("MRN1", windows[0])
    accented.PatientName = "Müller^Jürgen"
    with_charset = study_query("MRN1", windows[0])
    with_charset.SpecificCharacterSet = "ISO_IR 100"
    with_sequence = study_query("MRN1", windows[0])
    with_sequence.ReferencedStudySequence = [Dataset()]
    for ds in (accented, with_charset, with_sequence):
        assert identifier_bytes(ds) is None
