"""Retrieval against real PACS: Orthanc, dcmtk's dcmqrscp and the in-process demo PACS.

Every retrieved instance is compared with the file the PACS was seeded from (SOP Instance UID
and pixel data), and each failure path ends in the reason category the loader records.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)

from connectors import PROJECT_ROOT
from connectors.config import settings_from_dict
from connectors.errors import ConfigError, PacsUnreachable, StudyFailed
from connectors.load.retry_policy import RetryPolicy
from connectors.pacs.net import make_ae, open_association
from connectors.pacs.retrieve import RetrievedStudy, Retriever
from connectors.pacs.retrieve.engine import AssociationRetriever
from connectors.pacs.storage import file_name_for
from connectors.testbed.orthanc import free_port
from tests.support.pacs_fixtures import pacs_settings
from tests.support.real_parts import require_binary

MOVE_AET = "P2X_RECEIVER"


@pytest.fixture(scope="module")
def studies(pacs_files: list[Path]) -> dict[str, list[Path]]:
    """The session cohort's files grouped by Study Instance UID (their parent folder)."""
    out: dict[str, list[Path]] = {}
    for p in pacs_files:
        out.setdefault(p.parent.name, []).append(p)
    return out


@pytest.fixture(scope="module")
def receive_port(orthanc: Any) -> int:
    """Our storage SCP's port, declared in the session Orthanc as modality ``MOVE_AET``."""
    port = free_port()
    orthanc.add_modality(MOVE_AET, MOVE_AET, "127.0.0.1", port)
    return port


POLICY = RetryPolicy.from_project(PROJECT_ROOT)  # the seed says which reasons are transient


def assert_same_instances(got: RetrievedStudy, sources: list[Path]) -> None:
    """Every source instance is in the folder once, as ``<uid>.dcm``, with the same pixels."""
    names = sorted(p.name for p in got.folder.iterdir())
    assert names == sorted(file_name_for(pydicom.dcmread(s).SOPInstanceUID) for s in sources)
    assert got.files == len(sources)
    assert got.bytes == sum(p.stat().st_size for p in got.folder.iterdir())
    for src in sources:
        want = pydicom.dcmread(src)
        have = pydicom.dcmread(got.folder / file_name_for(want.SOPInstanceUID))
        assert have.SOPInstanceUID == want.SOPInstanceUID
        assert have.StudyInstanceUID == got.study_instance_uid
        assert have.PixelData == want.PixelData
        assert have.file_meta.TransferSyntaxUID  # written with a File Meta header
    assert (got.folder.stat().st_mode & 0o777) == 0o700


def number_of_study_related_instances(server: Any, uid: str) -> int:
    """What the PACS's study-level C-FIND says (the count the loader passes as ``expected``)."""
    settings = pacs_settings(server)
    assoc = open_association(
        settings, make_ae(settings, [StudyRootQueryRetrieveInformationModelFind])
    )
    try:
        q = Dataset()
        q.QueryRetrieveLevel = "STUDY"
        q.StudyInstanceUID = uid
        q.NumberOfStudyRelatedInstances = ""
        counts = [
            int(ident.NumberOfStudyRelatedInstances)
            for status, ident in assoc.send_c_find(q, StudyRootQueryRetrieveInformationModelFind)
            if status and status.Status in (0xFF00, 0xFF01)
        ]
    finally:
        assoc.release()
    assert len(counts) == 1
    return counts[0]


@pytest.mark.orthanc
@pytest.mark.parametrize(
    ("method", "backend"),
    [("c-get", "pynetdicom"), ("c-move", "pynetdicom"), ("c-get", "dcmtk"), ("c-move", "dcmtk")],
)
def test_retrieves_every_instance_from_orthanc(
    orthanc: Any,
    studies: dict[str, list[Path]],
    receive_port: int,
    tmp_path: Path,
    method: str,
    backend: str,
) -> None:
    """It retrieves studies (two at once) byte-identical in SOP Instance UID and pixel data,
    with the count the PACS's Number of Study Related Instances promised."""
    if backend == "dcmtk":
        require_binary("/usr/bin/getscu", "dcmtk")
    settings = pacs_settings(
        orthanc,
        retrieve=method,
        retrieve_backend=backend,
        move_destination=MOVE_AET,
        receive_port=receive_port,
        max_associations=2,
    )
    uids = sorted(studies)[:3]
    expected = {u: number_of_study_related_instances(orthanc, u) for u in uids}
    with Retriever(settings) as r, ThreadPoolExecutor(2) as pool:
        got = list(pool.map(lambda u: r.retrieve(u, tmp_path / u, expected[u]), uids))
    for study in got:
        assert study.expected == expected[study.study_instance_uid] == study.files
        assert_same_instances(study, studies[study.study_instance_uid])


@pytest.mark.orthanc
def test_dcmtk_c_move_says_when_its_receive_port_is_taken(
    orthanc: Any, studies: dict[str, list[Path]], tmp_path: Path
) -> None:
    """The dcmtk back end's storescp needs ``receive_port``: another listener there is a
    ConfigError naming it, before any C-MOVE is asked."""
    require_binary("/usr/bin/storescp", "dcmtk")
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = pacs_settings(orthanc, retrieve="c-move", retrieve_backend="dcmtk",
                                 move_destination=MOVE_AET, receive_port=port)  # fmt: skip
        with Retriever(settings) as r, pytest.raises(ConfigError, match=f"receive_port {port}"):
            r.retrieve(sorted(studies)[0], tmp_path / "s")
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").glob("*.dcm"))


@pytest.mark.orthanc
def test_reuses_one_association_for_many_studies(
    orthanc: Any, studies: dict[str, list[Path]], tmp_path: Path
) -> None:
    """It keeps the association open between studies and never opens more than the cap."""
    with AssociationRetriever(pacs_settings(orthanc, max_associations=1)) as r:
        for uid in sorted(studies)[:3]:
            r.retrieve(uid, tmp_path / uid)
        assert len(r._idle) == 1
        first = r._idle[0]
        r.retrieve(sorted(studies)[3], tmp_path / "again")
        assert r._idle == [first]


@pytest.mark.orthanc
@pytest.mark.parametrize("backend", ["pynetdicom", "dcmtk"])
def test_a_study_not_on_the_pacs_is_not_found(orthanc: Any, tmp_path: Path, backend: str) -> None:
    """It names a study the PACS does not hold 'not_found_on_pacs', not a transient failure."""
    with (
        Retriever(pacs_settings(orthanc, retrieve_backend=backend)) as r,
        pytest.raises(StudyFailed) as e,
    ):
        r.retrieve("1.2.826.0.1.3680043.8.498.1", tmp_path / "x", expected=3)
    assert e.value.reason_category == "not_found_on_pacs"
    assert not POLICY.is_transient(e.value.reason_category)
    assert e.value.files_received == 0


@pytest.mark.orthanc
def test_fewer_files_than_expected_is_incomplete_and_keeps_the_files(
    orthanc_factory: Callable[..., Any], studies: dict[str, list[Path]], tmp_path: Path
) -> None:
    """It reports 'retrieve_incomplete' with the counts when the PACS lost an instance after
    its C-FIND counted it, and keeps what did arrive."""
    uid = sorted(studies)[0]
    files = studies[uid]
    server = orthanc_factory(files)
    expected = number_of_study_related_instances(server, uid)
    assert server.delete_instance(pydicom.dcmread(files[0]).SOPInstanceUID)
    with (
        Retriever(pacs_settings(server, max_associations=1)) as r,
        pytest.raises(StudyFailed) as e,
    ):
        r.retrieve(uid, tmp_path / "s", expected=expected)
    assert e.value.reason_category == "retrieve_incomplete"
    assert POLICY.is_transient(e.value.reason_category)  # seeds/failure_reasons.csv
    assert (e.value.files_expected, e.value.files_received) == (expected, expected - 1)
    assert f"{expected - 1} of {expected}" in str(e.value)
    assert len(list((tmp_path / "s").glob("*.dcm"))) == expected - 1


@pytest.mark.slow
@pytest.mark.parametrize("associations", [1, 2])
def test_a_dropped_association_fails_the_study_and_the_next_retrieve_reconnects(
    demo_pacs_factory: Callable[..., Any],
    studies: dict[str, list[Path]],
    tmp_path: Path,
    associations: int,
) -> None:
    """It turns an association aborted mid-C-GET into a transient 'retrieve_failed' that keeps
    the files already written, then opens a fresh association for the next retrieve (in this
    process with one association, in the worker processes with two)."""
    pacs = demo_pacs_factory(abort_after=1)
    uid = max(studies, key=lambda u: len(studies[u]))
    n = len(studies[uid])
    assert n > 1
    with Retriever(pacs_settings(pacs, max_associations=associations)) as r:
        with pytest.raises(StudyFailed) as e:
            r.retrieve(uid, tmp_path / "first", expected=n)
        assert e.value.reason_category == "retrieve_failed"
        assert POLICY.is_transient(e.value.reason_category)
        assert e.value.files_received == len(list((tmp_path / "first").glob("*.dcm"))) == 1
        pacs.abort_after = None
        got = r.retrieve(uid, tmp_path / "second", expected=n)
    assert_same_instances(got, studies[uid])


@pytest.fixture
def stalling_pacs(studies: dict[str, list[Path]]) -> Iterator[tuple[Any, str, int]]:
    """An in-process C-GET SCP that sends one instance of a study, then goes silent."""
    uid = max(studies, key=lambda u: len(studies[u]))
    files = studies[uid]
    gate = threading.Event()

    def handle_get(event: evt.Event) -> Iterator[Any]:
        yield len(files)
        yield 0xFF00, pydicom.dcmread(files[0])
        gate.wait(30)  # silent until the test ends
        for f in files[1:]:
            yield 0xFF00, pydicom.dcmread(f)

    ae = AE(ae_title="STALLING")
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    for sop in sorted({str(pydicom.dcmread(f).SOPClassUID) for f in files}):
        ae.add_supported_context(sop, scu_role=False, scp_role=True)
    port = free_port()
    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_GET, handle_get)]
    )
    try:
        yield server, uid, port
    finally:
        gate.set()
        server.shutdown()


def test_a_pacs_gone_silent_is_a_timeout(
    stalling_pacs: tuple[Any, str, int], tmp_path: Path
) -> None:
    """It gives up after the DIMSE timeout when the PACS stops sending mid-study, as a
    transient 'timeout' that keeps the instance already written."""
    _server, uid, port = stalling_pacs
    settings = settings_from_dict(
        {
            "pacs": {
                "port": port,
                "called_aet": "STALLING",
                "dimse_timeout": 1.0,
                "max_associations": 1,
            }
        }
    )
    with Retriever(settings) as r, pytest.raises(StudyFailed) as e:
        r.retrieve(uid, tmp_path / "s")
    assert e.value.reason_category == "timeout"
    assert POLICY.is_transient(e.value.reason_category)
    assert e.value.files_received == 1 == len(list((tmp_path / "s").glob("*.dcm")))


@pytest.mark.orthanc
@pytest.mark.parametrize("method", ["c-get", "c-move"])
def test_a_full_disk_is_disk_full(
    orthanc: Any,
    studies: dict[str, list[Path]],
    receive_port: int,
    tiny_disk: Path,
    method: str,
) -> None:
    """It answers the PACS 0xA700 when the disk is full and fails the study as a transient
    'disk_full', leaving no half-written file behind."""
    uid = max(studies, key=lambda u: sum(p.stat().st_size for p in studies[u]))
    settings = pacs_settings(
        orthanc,
        retrieve=method,
        move_destination=MOVE_AET,
        receive_port=receive_port,
        max_associations=1,
    )
    with Retriever(settings) as r, pytest.raises(StudyFailed) as e:
        r.retrieve(uid, tiny_disk / "s", expected=len(studies[uid]))
    assert e.value.reason_category == "disk_full"
    assert POLICY.is_transient(e.value.reason_category)
    assert not list((tiny_disk / "s").glob("*.part"))
    for f in (tiny_disk / "s").glob("*.dcm"):  # what was written is whole
        assert pydicom.dcmread(f).SOPInstanceUID


@pytest.mark.dcmtk
def test_retrieves_from_dcmqrscp(
    dcmqrscp: Any, studies: dict[str, list[Path]], tmp_path: Path
) -> None:
    """It retrieves whole studies from dcmtk's dcmqrscp with C-GET, on one association."""
    uids = sorted(studies)[1:3]
    with Retriever(pacs_settings(dcmqrscp, max_associations=1)) as r:
        got = [r.retrieve(u, tmp_path / u, expected=len(studies[u])) for u in uids]
    for study in got:
        assert_same_instances(study, studies[study.study_instance_uid])


@pytest.mark.orthanc
def test_a_study_listed_with_no_images_is_no_images_on_pacs(orthanc: Any, tmp_path: Path) -> None:
    """It names a retrieve that brings nothing for a study the PACS counted 0 instances for
    'no_images_on_pacs', not a PACS failure."""
    with (
        Retriever(pacs_settings(orthanc, max_associations=1)) as r,
        pytest.raises(StudyFailed) as e,
    ):
        r.retrieve("1.2.826.0.1.3680043.8.498.2", tmp_path / "x", expected=0)
    assert e.value.reason_category == "no_images_on_pacs"
    assert not POLICY.is_transient(e.value.reason_category)


@pytest.mark.orthanc
def test_a_move_destination_the_pacs_does_not_know_fails_with_its_status(
    orthanc: Any, studies: dict[str, list[Path]], tmp_path: Path
) -> None:
    """It reports the PACS's failure status (Orthanc 0xC000, others 0xA801) naming our move
    destination, with no files, as 'retrieve_failed' (the study is on the PACS)."""
    settings = pacs_settings(
        orthanc, retrieve="c-move", move_destination="NOBODY", receive_port=free_port()
    )
    uid = sorted(studies)[0]
    with Retriever(settings) as r, pytest.raises(StudyFailed) as e:
        r.retrieve(uid, tmp_path / "s", expected=len(studies[uid]))
    assert e.value.reason_category == "retrieve_failed"
    assert "status 0x" in str(e.value)
    assert "move_destination 'NOBODY'" in str(e.value)
    assert e.value.files_received == 0


@pytest.mark.slow
def test_no_pacs_is_unreachable(tmp_path: Path) -> None:
    """It raises PacsUnreachable (exit 3) naming the address when nothing listens there, from
    a worker process too."""
    settings = settings_from_dict({"pacs": {"port": free_port(), "acse_timeout": 2.0}})
    with Retriever(settings) as r, pytest.raises(PacsUnreachable) as e:
        r.retrieve("1.2.3", tmp_path / "x")
    assert f":{settings.pacs.port}" in str(e.value)
    assert e.value.exit_code == 3


def test_c_move_needs_our_ae_title_as_the_pacs_knows_it() -> None:
    """It refuses C-MOVE without move_destination, and an unknown back end, as config errors."""
    with pytest.raises(ConfigError, match="move_destination"):
        Retriever(settings_from_dict({"pacs": {"retrieve": "c-move"}}))
    with pytest.raises(ConfigError, match="retrieve_backend"):
        settings_from_dict({"pacs": {"retrieve_backend": "curl"}})


def test_file_names_come_from_clean_uids_only() -> None:
    """It names files after the SOP Instance UID, and hashes anything that is not a UID."""
    assert file_name_for("1.2.840.113619.2.55.3") == "1.2.840.113619.2.55.3.dcm"
    for bad in ("../../etc/passwd", "1.2/3", "", "1..2", "1.2\x00"[:-1] + "/"):
        name = file_name_for(bad)
        assert "/" not in name
        assert name.endswith(".dcm")
        assert name.startswith("x")
    assert file_name_for("1.2.3\x00") == "1.2.3.dcm"  # a padded UID is still a UID


@pytest.mark.parametrize(
    ("sop_class", "syntax"),
    [
        ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1"),  # CT, explicit VR little endian
        ("1.2.840.10008.5.1.4.1.1.481.3", "1.2.840.10008.1.2"),  # RT Structure Set, implicit
        ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.1.2.2"),  # SEG, big endian
        ("1.2.840.10008.5.1.4.1.1.88.11", "1.2.840.10008.1.2.1.99"),  # Basic Text SR, deflated
        ("1.2.840.10008.5.1.4.1.1.3.1", "1.2.840.10008.1.2.4.90"),  # US multi-frame, JPEG 2000
        ("1.2.826.0.1.3680043.8.498.1", "1.2.840.10008.1.2.4.80"),  # private class, JPEG-LS
    ],
)
@pytest.mark.parametrize(
    "instance", ["1.2.3.4", "1.2.3.45", "2.25." + "1" * 59, "1.2.826.0.1.3680043.8.498.1.2"]
)
def test_what_is_written_is_pynetdicoms_encoded_dataset_byte_for_byte(
    sop_class: str, syntax: str, instance: str, tmp_path: Path
) -> None:
    """Our File Meta writer gives the bytes pynetdicom's ``encoded_dataset()`` gives (its File
    Meta built with pydicom), for odd and even UIDs of every length and every syntax; a request
    without its UIDs is not understood."""
    from io import BytesIO

    from pydicom.filereader import read_file_meta_info
    from pydicom.uid import UID
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.events import Event
    from pynetdicom.presentation import PresentationContextTuple

    from connectors.pacs.storage import encoded_instance

    request = C_STORE()
    request.AffectedSOPClassUID, request.AffectedSOPInstanceUID = sop_class, instance
    request.DataSet = BytesIO(os.urandom(101))  # as received: never decoded
    event = Event(None, evt.EVT_C_STORE, {"request": request})  # type: ignore[arg-type]
    event.context = PresentationContextTuple(1, UID(sop_class), UID(syntax))
    got = encoded_instance(event)
    assert got is not None
    assert got == (instance, event.encoded_dataset(include_meta=True), syntax)
    (tmp_path / "x.dcm").write_bytes(got[1])
    meta = read_file_meta_info(tmp_path / "x.dcm")
    assert (meta.MediaStorageSOPInstanceUID, meta.TransferSyntaxUID) == (instance, syntax)
    assert got[1].endswith(request.DataSet.getvalue())
    request.AffectedSOPInstanceUID = None
    assert encoded_instance(event) is None


def test_retrieved_study_is_the_documented_record(tmp_path: Path) -> None:
    """It keeps the fields the loader reads, frozen."""
    rs = RetrievedStudy("1.2", tmp_path, 3, 30, 3, 0.5)
    assert dataclasses.asdict(rs) == {
        "study_instance_uid": "1.2",
        "folder": tmp_path,
        "files": 3,
        "bytes": 30,
        "expected": 3,
        "seconds": 0.5,
        "as_stored": None,
        "converted": None,
        "lossy_converted": None,
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        rs.files = 4  # type: ignore[misc]
    assert os.fspath(rs.folder) == str(tmp_path)


@pytest.mark.slow
def test_a_worker_that_stops_answering_is_given_up_only_when_no_data_arrives(
    tmp_path: Path,
) -> None:
    """It waits for a worker as long as files keep arriving, and gives up (None) once the
    study folder has not grown for the stall time: a hung worker can never hang a load."""
    import multiprocessing
    import threading
    import time

    from connectors.config import PacsConfig, Settings
    from connectors.pacs.retrieve.workers import WorkerPool

    settings = Settings(pacs=PacsConfig(dimse_timeout=1.0, network_timeout=0.5))
    pool = WorkerPool(settings, 0)  # no processes: only the waiting is under test
    parent, child = multiprocessing.Pipe()
    dest = tmp_path / "study"
    dest.mkdir()

    def trickle() -> None:  # a slow but live transfer: a file every 0.5 s for 3 s
        for i in range(6):
            (dest / f"{i}.dcm").write_bytes(b"x" * 10)
            time.sleep(0.5)

    writer = threading.Thread(target=trickle)
    started = time.monotonic()
    writer.start()
    assert pool._wait(parent, dest) is None
    waited = time.monotonic() - started
    writer.join()
    assert waited > 3.0  # it did not give up while files were arriving
    child.send(("ok", 6, 60, 1.0))
    assert pool._wait(parent, dest) == ("ok", 6, 60, 1.0)
