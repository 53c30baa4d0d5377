"""Hostile PACS for a retrieve that must stay bit for bit: one that converts lossless-stored
instances to a lossy syntax on the way, one that refuses C-GET, and a study holding a SOP class
outside pynetdicom's list. Each ends complete or failed with the right reason and message."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE

from connectors import PROJECT_ROOT
from connectors.config import Settings
from connectors.errors import StudyFailed
from connectors.load.retry_policy import RetryPolicy
from connectors.pacs.retrieve import Retriever
from connectors.pacs.storage_scp import MoveReceiver
from connectors.testbed.corpus import LOSSY_SYNTAXES, CorpusInstance
from connectors.testbed.orthanc import free_port
from connectors.testbed.pacs_scp import DemoPacs
from tests.support.pacs_fixtures import pacs_settings

PRIVATE_SOP_CLASS = "1.2.826.0.1.3680043.10.1201.9.1"  # a storage class no toolkit lists


def one_study(corpus: list[CorpusInstance], with_lossy: bool) -> list[CorpusInstance]:
    by: dict[str, list[CorpusInstance]] = {}
    for i in corpus:
        by.setdefault(i.study_instance_uid, []).append(i)
    return next(
        v
        for v in by.values()
        if any(i.transfer_syntax_uid in LOSSY_SYNTAXES for i in v) == with_lossy
    )


def test_counts_what_arrived_as_stored_when_the_pacs_says(
    corpus: list[CorpusInstance], demo_pacs_factory: Callable[..., DemoPacs], tmp_path: Path
) -> None:
    """A PACS that answers (0002,0010) at image level: every instance counted as stored."""
    held = one_study(corpus, with_lossy=True)
    pacs = demo_pacs_factory(held[0].path.parent, reported_syntax={})
    with Retriever(pacs_settings(pacs, max_associations=1)) as r:
        got = r.retrieve(held[0].study_instance_uid, tmp_path / "s", expected=len(held))
    assert (got.as_stored, got.converted, got.lossy_converted) == (len(held), 0, 0)


def test_a_study_only_deliverable_lossy_converted_fails_as_lossy_conversion(
    corpus: list[CorpusInstance], demo_pacs_factory: Callable[..., DemoPacs], tmp_path: Path
) -> None:
    """The PACS says it stores an instance lossless and sends it lossy (in the JPEG context
    proposed for another instance it does store lossy): never lossy on the way, the study
    fails with its own reason, which is not retried (the PACS would do it again)."""
    held = one_study(corpus, with_lossy=True)
    lossy = next(i for i in held if i.transfer_syntax_uid in LOSSY_SYNTAXES)
    folder = tmp_path / "pacs"
    folder.mkdir()
    for i in held:
        shutil.copy(i.path, folder / i.path.name)
    twin = pydicom.dcmread(lossy.path)  # stored lossless, says the PACS; sent lossy
    twin.SOPInstanceUID = twin.file_meta.MediaStorageSOPInstanceUID = lossy.sop_instance_uid + ".1"
    twin.save_as(folder / "twin.dcm", enforce_file_format=True)
    pacs = demo_pacs_factory(
        folder, reported_syntax={str(twin.SOPInstanceUID): ExplicitVRLittleEndian}
    )
    with Retriever(pacs_settings(pacs, max_associations=1)) as r, pytest.raises(StudyFailed) as e:
        r.retrieve(held[0].study_instance_uid, tmp_path / "s", expected=len(held) + 1)
    assert e.value.reason_category == "lossy_conversion"
    assert e.value.conversions == (len(held), 1, 1)
    assert "lossy" in str(e.value)
    assert not RetryPolicy.from_project(PROJECT_ROOT).is_transient("lossy_conversion")


@pytest.mark.orthanc
def test_a_pacs_refusing_c_get_names_the_c_move_fallback(
    corpus: list[CorpusInstance], orthanc_factory: Callable[..., Any], tmp_path: Path
) -> None:
    held = one_study(corpus, with_lossy=False)
    server = orthanc_factory([i.path for i in held], config={"DicomAlwaysAllowGet": False})
    with Retriever(pacs_settings(server, max_associations=1)) as r, pytest.raises(StudyFailed) as e:
        r.retrieve(held[0].study_instance_uid, tmp_path / "s", expected=len(held))
    assert e.value.reason_category == "retrieve_failed"
    assert "retrieve = 'c-move'" in str(e.value)


@pytest.mark.orthanc
@pytest.mark.parametrize(
    "method",
    [
        pytest.param(
            "c-get",
            marks=pytest.mark.xfail(
                strict=True,
                reason="Orthanc 1.10 accepts the context but not our SCP role for a class it "
                "does not list, so pynetdicom refuses the C-STORE (0x0122): use C-MOVE",
            ),
        ),
        "c-move",
    ],
)
def test_a_sop_class_outside_pynetdicoms_list_arrives_as_is(
    method: str,
    corpus: list[CorpusInstance],
    orthanc_factory: Callable[..., Any],
    tmp_path: Path,
) -> None:
    """The study's SOP Classes in Study name it, so the C-GET proposes it and our storage SCP
    accepts it: it arrives as is."""
    held = one_study(corpus, with_lossy=False)
    src = next(i for i in held if i.transfer_syntax_uid == ExplicitVRLittleEndian)
    ds = pydicom.dcmread(src.path)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = PRIVATE_SOP_CLASS
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = src.sop_instance_uid + ".9"
    private = tmp_path / "private.dcm"
    ds.save_as(private, enforce_file_format=True)
    port = free_port()
    server = orthanc_factory(
        [*(i.path for i in held), private], modalities={"P2X_PRIV": ("P2X_PRIV", "127.0.0.1", port)}
    )
    settings = pacs_settings(
        server, retrieve=method, move_destination="P2X_PRIV", receive_port=port
    )
    with Retriever(settings) as r:
        got = r.retrieve(held[0].study_instance_uid, tmp_path / "s", expected=len(held) + 1)
    arrived = pydicom.dcmread(got.folder / f"{ds.SOPInstanceUID}.dcm")
    assert arrived.SOPClassUID == PRIVATE_SOP_CLASS
    assert arrived.PixelData == ds.PixelData
    shutil.rmtree(got.folder)


def test_every_worker_s_storage_scp_accepts_a_class_another_worker_asked_for(
    tmp_path: Path,
) -> None:
    """C-MOVE in worker processes: the kernel hands the PACS's association to any worker's
    storage SCP on the shared port (SO_REUSEPORT), not only to the one whose study holds the
    class outside pynetdicom's list. Two receivers on one port and registry, one told of the
    class: every association proposing it, whichever receiver takes it, accepts it (before,
    the other refused and the PACS answered 0xC000 with part of the study)."""
    port = free_port()
    settings = pacs_settings(
        _Peer(),
        Settings(base_dir=tmp_path),
        move_destination="P2X_SHARED",
        receive_port=port,
    )
    registry = tmp_path / "registry"
    receivers = [MoveReceiver(settings, "127.0.0.1", registry) for _ in range(2)]
    for r in receivers:
        r.start()
    try:
        receivers[0].accept_classes({PRIVATE_SOP_CLASS})
        accepted = []
        for _ in range(12):  # spread by source port: both receivers take some
            ae = AE(ae_title="PACS")
            ae.add_requested_context(PRIVATE_SOP_CLASS, ExplicitVRLittleEndian)
            assoc = ae.associate("127.0.0.1", port, ae_title="P2X_SHARED")
            accepted.append(assoc.is_established and bool(assoc.accepted_contexts))
            if assoc.is_established:
                assoc.release()
        assert all(accepted), accepted
    finally:
        for r in receivers:
            r.stop()


class _Peer:
    """Where the settings' PACS would be: nothing is asked of it here."""

    host, port, aet = "127.0.0.1", 1, "NONE"
