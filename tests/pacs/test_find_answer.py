"""find_answer reads a findscu answer file to the same row pydicom gives (``find.answer_row``),
on answers built byte by byte with the padding, multiple values, character sets and odd
values real PACS send; the rules it does not cover go to pydicom, never to a guess."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.datadict import dictionary_VR, tag_for_keyword

from connectors.pacs.dicom_head import top_level
from connectors.pacs.find import RETURN_KEYS, answer_row
from connectors.pacs.find_answer import _Pydicom, _read, _row, read_answer

EXPLICIT_LE = b"1.2.840.10008.1.2.1\x00"
IMPLICIT_LE = b"1.2.840.10008.1.2\x00"


def _element(tag: int, vr: str, value: bytes, implicit: bool = False) -> bytes:
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if implicit:
        return head + struct.pack("<I", len(value)) + value
    if vr in ("SQ", "UN", "OB"):
        return head + vr.encode() + b"\0\0" + struct.pack("<I", len(value)) + value
    return head + vr.encode() + struct.pack("<H", len(value)) + value


def _file(elements: dict[int, tuple[str, bytes]], syntax: bytes = EXPLICIT_LE) -> bytes:
    """An answer as findscu -X writes one: preamble, File Meta, the dataset in ``syntax``."""
    meta = _element(0x00020010, "UI", syntax) + _element(0x00020003, "UI", b"1.2.3.4\x00")
    out = b"\0" * 128 + b"DICM" + _element(0x00020000, "UL", struct.pack("<I", len(meta))) + meta
    implicit = syntax == IMPLICIT_LE
    for tag in sorted(elements):
        vr, value = elements[tag]
        out += _element(tag, vr, value, implicit)
    return out


def _tag(keyword: str) -> int:
    return int(tag_for_keyword(keyword) or 0)


#: Values seen from PACS or allowed by PS3.5, as bytes: padding, multiple values, empties.
PLAIN = [b"", b"CT", b"CT ", b"CT\\SR", b"CT \\MR\\", b" CT", b"CT\x00", b"\\", b"CT\\\\MR "]
TEXT = [b"", b"Doe", b"Doe ", b" Doe", b"a\\b ", b"a \\ b\x00", b"CT NECK W/ CONTRAST", b"x\x00 "]
UIDS = [b"1.2.3", b"1.2.3\x00", b"1.2.3 ", b"1.2.3\\1.2.4\x00", b""]
INTEGERS = [b"1", b"80", b"12 ", b" 7", b"007", b"1\\2", b" 1\\ 2 ", b"3 \\4", b"007\\ 08", b""]
NAMES = [b"Doe^Jane", b"Doe^Jane ", b"Doe^Jane\\Roe^Ann", b"=Doe", b"", b"^^^^"]
LATIN1 = [b"Ren\xe9e", b"M\xfcller^J\xfcrgen "]
UTF8 = ["Renée".encode(), "Müller^Jürgen ".encode(), "Łódź".encode()]


def _answer(rng: random.Random, charset: bytes | None, extra: list[bytes]) -> dict:
    elements: dict[int, tuple[str, bytes]] = {}
    if charset is not None:
        elements[0x00080005] = ("CS", charset)
    elements[_tag("QueryRetrieveLevel")] = ("CS", b"STUDY ")
    elements[_tag("RetrieveAETitle")] = ("AE", b"ORTHANC ")
    for keyword in RETURN_KEYS:
        if rng.random() < 0.1:
            continue  # absent
        vr = dictionary_VR(keyword)
        pool = {"UI": UIDS, "IS": INTEGERS, "PN": NAMES + extra, "SH": TEXT, "LO": TEXT + extra}
        elements[_tag(keyword)] = (vr, rng.choice(pool.get(vr, PLAIN)))
    return elements


CHARSETS: list[tuple[bytes | None, list[bytes]]] = [
    (None, []),
    (b"", []),
    (b"ISO_IR 6", []),
    (b"ISO_IR 100", LATIN1),
    (b"ISO_IR 192", UTF8),
]


@pytest.mark.parametrize(("charset", "extra"), CHARSETS)
def test_the_rows_are_pydicoms_on_every_answer_the_rules_cover(
    tmp_path: Path, charset: bytes | None, extra: list[bytes]
) -> None:
    rng = random.Random(f"{charset!r}")
    for i in range(300):
        data = _file(_answer(rng, charset, extra))
        path = tmp_path / f"rsp{i:04d}.dcm"
        path.write_bytes(data)
        elements = top_level(data)
        assert elements is not None
        expected = answer_row(dcmread(path, force=True))
        assert _row(elements) == expected, data  # the walker's rules, not pydicom's fallback
        assert read_answer(path) == expected
        assert list(read_answer(path)) == list(expected)  # the same columns, in order


@pytest.mark.parametrize(
    ("elements", "syntax"),
    [
        ({0x00080005: ("CS", b"ISO 2022 IR 6\\ISO 2022 IR 87"),
          _tag("PatientName"): ("PN", b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B")},
         EXPLICIT_LE),
        ({0x00080005: ("CS", b"ISO_IR 144"), _tag("PatientName"): ("PN", b"\xbb\xee\xdc")},
         EXPLICIT_LE),
        ({0x00080005: ("CS", b"ISO_IR 192"), _tag("PatientName"): ("PN", b"\xff\xfe")},
         EXPLICIT_LE),
        ({_tag("NumberOfStudyRelatedInstances"): ("IS", b"+3")}, EXPLICIT_LE),
        ({_tag("NumberOfStudyRelatedInstances"): ("IS", b"1.0")}, EXPLICIT_LE),
        ({_tag("NumberOfStudyRelatedInstances"): ("IS", b" \\ 3")}, EXPLICIT_LE),
        ({_tag("StudyDescription"): ("UN", b"CT")}, EXPLICIT_LE),
        ({_tag("StudyDescription"): ("LO", b"CT")}, IMPLICIT_LE),
    ],
    ids=["iso-2022", "cyrillic", "bad-utf8", "signed-is", "decimal-is", "empty-is-value",
         "un-vr", "implicit"],
)  # fmt: skip
def test_what_the_rules_do_not_cover_is_read_by_pydicom(
    tmp_path: Path, elements: dict[int, tuple[str, bytes]], syntax: bytes
) -> None:
    data = _file({_tag("StudyInstanceUID"): ("UI", b"1.2.3\x00"), **elements}, syntax)
    path = tmp_path / "rsp0001.dcm"
    path.write_bytes(data)
    walked = top_level(data)
    if walked is not None:
        with pytest.raises(_Pydicom):
            _row(walked)
    assert read_answer(path) == answer_row(dcmread(path, force=True))


def test_a_cut_short_answer_is_pydicoms_reading_and_a_missing_one_an_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "rsp0001.dcm"
    data = _file({_tag("StudyInstanceUID"): ("UI", b"1.2.3\x00"), _tag("PatientID"): ("LO", b"M1")})
    path.write_bytes(data[:-3])  # findscu killed mid-write
    assert top_level(path.read_bytes()) is None
    assert read_answer(path) == answer_row(dcmread(path, force=True))
    with pytest.raises(FileNotFoundError):
        read_answer(tmp_path / "gone.dcm")


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 3 * 65536])
def test_a_file_is_read_whole_whatever_its_length(tmp_path: Path, size: int) -> None:
    """``_read`` stops at the first short read: a file of exactly one or more whole chunks
    takes one more, empty, read; none is cut."""
    path = tmp_path / "rsp0001.dcm"
    data = random.Random(size).randbytes(size)
    path.write_bytes(data)
    assert _read(path) == data
