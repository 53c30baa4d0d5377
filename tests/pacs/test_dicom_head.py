"""``dicom_head.read_head``: what routes a received instance (its SOP Instance UID and transfer
syntax from the File Meta, its Study Instance UID from the top level) read by walking element
lengths, held to pydicom's answer: on the whole real-world-like corpus (every SOP class family
and transfer syntax), and on heads built to mislead a byte search (another study's UID inside a
sequence before group 0020, an undefined-length UN, a large private element, NUL padding)."""

from __future__ import annotations

import struct
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from connectors.pacs.dicom_head import Head, _Bytes, _pydicom_head, _Unwalkable, _walk, read_head
from connectors.testbed.corpus import CorpusInstance


def _walked(data: bytes) -> Head:
    """What the walker itself reads (no pydicom fallback): _Unwalkable where it would fall back."""
    return _walk(_Bytes(len(data), data=data))


STUDY = "1.2.826.0.1.3680043.10.1201.1"
OTHER = "1.2.826.0.1.3680043.10.1201.2"
SOP = "1.2.826.0.1.3680043.10.1201.3"
CT = "1.2.840.10008.5.1.4.1.1.2"


def test_every_corpus_instance_reads_as_pydicom_reads_it(corpus: list[CorpusInstance]) -> None:
    walked = 0
    for inst in corpus:
        want = Head(inst.sop_instance_uid, inst.transfer_syntax_uid, inst.study_instance_uid)
        assert _pydicom_head(inst.path) == want, inst.path.name
        data = inst.path.read_bytes()
        assert read_head(inst.path) == want, (inst.modality, inst.transfer_syntax_uid)
        assert read_head(data) == want, (inst.modality, inst.transfer_syntax_uid)
        if inst.transfer_syntax_uid == DeflatedExplicitVRLittleEndian:
            with pytest.raises(_Unwalkable):  # pydicom inflates it: the fallback answered
                _walked(data)
        else:  # the walker itself answered, not the fallback
            assert _walked(data) == want
            walked += 1
    assert walked == len(corpus) - 2  # the corpus's two deflated instances


def _instance(
    syntax: str, *, before: list[tuple[int, str, object]] | None = None, undefined: bool = False
) -> Dataset:
    """A small CT head of STUDY with a sequence (0008,1200) before group 0020 that names
    another study, nested one level deeper too (``undefined``: the sequences and their items
    of undefined length, with delimiters), and optional extra elements."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CT, SOP, "CT"
    inner = Dataset()
    inner.StudyInstanceUID = OTHER
    ref = Dataset()
    ref.StudyInstanceUID = OTHER
    ref.ReferencedSeriesSequence = Sequence([inner])
    ds.StudiesContainingOtherReferencedInstancesSequence = Sequence([ref, ref])
    if undefined:
        for item in (inner, ref):
            item.is_undefined_length_sequence_item = True
        ref["ReferencedSeriesSequence"].is_undefined_length = True
        ds["StudiesContainingOtherReferencedInstancesSequence"].is_undefined_length = True
    for tag, vr, value in before or []:
        ds.add_new(tag, vr, value)
    ds.PatientID = "SYNTH-1"
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = STUDY + ".1"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CT
    ds.file_meta.MediaStorageSOPInstanceUID = SOP
    ds.file_meta.TransferSyntaxUID = syntax
    return ds


def _encoded(ds: Dataset) -> bytes:
    out = BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.parametrize("undefined", [False, True], ids=["defined", "undefined-length"])
@pytest.mark.parametrize(
    "syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]
)
def test_another_studys_uid_inside_a_sequence_is_not_taken_for_the_instances(
    syntax: str, undefined: bool, tmp_path: Path
) -> None:
    data = _encoded(_instance(syntax, undefined=undefined))
    assert data.count(OTHER.encode()) == 4  # two items, each naming it twice
    assert data.index(OTHER.encode()) < data.index(STUDY.encode())
    assert (b"\xff\xff\xff\xff" in data) == undefined
    want = Head(SOP, syntax, STUDY)
    assert _walked(data) == want
    path = tmp_path / "i.dcm"
    path.write_bytes(data)
    assert read_head(path) == want == _pydicom_head(path)


def test_a_large_private_element_before_group_0020_is_skipped_in_a_file(tmp_path: Path) -> None:
    blob = bytes(range(256)) * 400  # 100 kB: past the walker's first read of the file
    ds = _instance(ExplicitVRLittleEndian, before=[(0x00091010, "OB", blob)])
    ds.add_new(0x00090010, "LO", "SYNTH PRIVATE")
    path = tmp_path / "i.dcm"
    path.write_bytes(_encoded(ds))
    assert path.stat().st_size > 100_000
    assert read_head(path) == Head(SOP, ExplicitVRLittleEndian, STUDY) == _pydicom_head(path)


def _explicit(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
    if vr in (b"OB", b"SQ", b"UN"):
        return struct.pack("<HH2sHI", group, elem, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


def test_an_undefined_length_un_is_walked_as_implicit_little_endian() -> None:
    """PS3.5 6.2.2: a UN of undefined length holds a sequence in implicit VR little endian;
    this one (private (0009,1001)) holds an item with another study's UID."""
    meta_body = _explicit(2, 0x0003, b"UI", SOP.encode() + b"\x00") + _explicit(
        2, 0x0010, b"UI", ExplicitVRLittleEndian.encode()
    )
    meta = _explicit(2, 0, b"UL", struct.pack("<I", len(meta_body))) + meta_body
    other = OTHER.encode() + b"\x00"
    item_body = struct.pack("<HHI", 0x0020, 0x000D, len(other)) + other  # implicit VR
    un = struct.pack("<HH2sHI", 0x0009, 0x1001, b"UN", 0, 0xFFFFFFFF)
    un += struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + item_body
    un += struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    body = _explicit(8, 0x0018, b"UI", SOP.encode() + b"\x00")
    body += _explicit(9, 0x0010, b"LO", b"SYNTH ") + un
    body += _explicit(0x20, 0x000D, b"UI", STUDY.encode() + b"\x00")
    data = b"\x00" * 128 + b"DICM" + meta + body
    assert _walked(data) == Head(SOP, ExplicitVRLittleEndian, STUDY)
    assert read_head(data) == _pydicom_head(data)


def test_padding_is_stripped_and_a_missing_study_uid_is_none() -> None:
    ds = _instance(ExplicitVRLittleEndian)
    del ds.StudyInstanceUID
    assert read_head(_encoded(ds)) == Head(SOP, ExplicitVRLittleEndian, None)
    data = _encoded(_instance(ExplicitVRLittleEndian))
    assert STUDY.encode() + b"\x00" in data  # an odd-length UID is NUL-padded
    assert read_head(data) == Head(SOP, ExplicitVRLittleEndian, STUDY)


def test_a_head_cut_short_routes_nowhere(tmp_path: Path) -> None:
    """Cut inside the preamble, the File Meta or before the Study UID: the walker stops and
    pydicom's lenient answer is returned, which names no study (so no study takes the file)."""
    data = _encoded(_instance(ExplicitVRLittleEndian))
    for cut in (50, 140, data.index(STUDY.encode()) - 4):
        path = tmp_path / f"cut{cut}.dcm"
        path.write_bytes(data[:cut])
        with pytest.raises(_Unwalkable):
            _walked(data[:cut])
        for source in (path, data[:cut]):
            head = read_head(source)
            assert head == _pydicom_head(source), cut
            assert head is None or head.study_instance_uid is None, cut
    assert read_head(b"not DICOM at all" * 20) is None
    assert read_head(tmp_path / "absent.dcm") is None


def test_a_private_transfer_syntax_is_left_to_pydicom() -> None:
    private = b"1.2.826.0.1.3680.99\x00"  # as long as the syntax it replaces
    data = _encoded(_instance(ExplicitVRLittleEndian))
    data = data.replace(ExplicitVRLittleEndian.encode() + b"\x00", private, 1)
    with pytest.raises(_Unwalkable):
        _walked(data)
    assert read_head(data) == _pydicom_head(data)
