"""Which instance a received file or C-STORE is, from its first bytes: the SOP Instance UID and
transfer syntax (File Meta) and the Study Instance UID (the dataset's top level).

Routing what a C-MOVE delivers to its study (dcmtk's storescp folder, ``dcmtk_receiver.py``;
our storage SCP, ``storage.py``) needs these three values from every instance. pydicom's
``dcmread(..., specific_tags=...)`` takes ~0.7 ms a file for them and its File Meta reader
another ~0.2 ms: measured, taking and collecting a 100-image study's files cost as long as
its C-MOVE (benchmarks/load/README.md, "Reading heads"). This walks the File Meta group and
then the dataset's top-level elements by their lengths (PS3.5 section 7.1; sequences and items
of undefined length item by item, 7.5; an undefined-length UN's content in implicit VR little
endian, 6.2.2) until it passes (0020,000D), in the three plain encodings: explicit VR little
endian (every encapsulated syntax too), implicit VR little endian, explicit VR big endian.
A deflated dataset, a private transfer syntax or a head it cannot walk (truncated, tags out of
order, an unknown VR) goes to pydicom instead (``read_head`` falls back), so the answer is
pydicom's wherever this walker would have to guess. tests/pacs/test_dicom_head.py holds both
to the same answer on the whole real-world-like corpus.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread
from pydicom.uid import UID

logger = logging.getLogger(__name__)

STUDY_UID_TAG = 0x0020000D
_SOP_INSTANCE_UID, _TRANSFER_SYNTAX = 0x00020003, 0x00020010
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = frozenset(
    (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV")
)  # 2 reserved bytes and a 4-byte length (PS3.5 table 7.1-1)
_CHUNK = 4096  # what one read of a file asks for; a CT's head is ~1-2 kB


@dataclass(frozen=True)
class Head:
    """What routes an instance: its UIDs and the syntax it was written in ("" when absent)."""

    sop_instance_uid: str
    transfer_syntax: str
    study_instance_uid: str | None


class _Unwalkable(Exception):
    """A head this walker does not read: pydicom decides."""


def read_head(source: bytes | Path) -> Head | None:
    """The head of an encoded instance with its File Meta (``bytes``, as pynetdicom's
    ``encoded_dataset(include_meta=True)``) or of a file; None when not even pydicom can read
    it (half written, not DICOM)."""
    try:
        if isinstance(source, Path):
            with open(source, "rb", buffering=0) as fh:
                return _walk(_Bytes(fh=fh, size=os.fstat(fh.fileno()).st_size))
        return _walk(_Bytes(data=source, size=len(source)))
    except OSError:
        return None
    except _Unwalkable as e:
        logger.debug("head not walked (%s): pydicom reads it", e)
    return _pydicom_head(source)


def _pydicom_head(source: bytes | Path) -> Head | None:
    try:
        fp = BytesIO(source) if isinstance(source, bytes) else source
        ds = dcmread(fp, stop_before_pixels=True, specific_tags=[STUDY_UID_TAG])
    except Exception:  # half written, or not DICOM
        return None
    meta = ds.file_meta
    study = ds.get("StudyInstanceUID")
    return Head(
        str(meta.get("MediaStorageSOPInstanceUID", "")).strip(),
        str(meta.get("TransferSyntaxUID", "")).strip(),
        str(study).strip() if study else None,
    )


class _Bytes:
    """Bytes at offsets, of a ``bytes`` or read from a file a chunk at a time."""

    def __init__(self, size: int, data: bytes = b"", fh: BinaryIO | None = None) -> None:
        self.fh, self.buf, self.start, self.size = fh, data, 0, size

    def take(self, pos: int, n: int) -> bytes:
        """Exactly ``n`` bytes at ``pos``, else _Unwalkable (the file ends before)."""
        if pos + n > self.size:
            raise _Unwalkable(f"ends at {self.size}, inside an element")
        off = pos - self.start
        if off < 0 or off + n > len(self.buf):
            assert self.fh is not None  # a bytes source is whole
            self.fh.seek(pos)
            self.buf, self.start, off = self.fh.read(max(n, _CHUNK)), pos, 0
        got = self.buf[off : off + n]
        if len(got) != n:  # the file shrank since its size was read
            raise _Unwalkable(f"ends at {pos + len(got)}, inside an element")
        return got


class _Syntax:
    """How a dataset's elements are encoded: byte order and explicit VR or not."""

    def __init__(self, *, little: bool, explicit: bool) -> None:
        end = "<" if little else ">"
        self.explicit = explicit
        self.header = struct.Struct(end + "HH4s")  # group, element, then VR+length or length
        self.u32, self.u16 = struct.Struct(end + "I"), struct.Struct(end + "H")


_EXPLICIT_LE = _Syntax(little=True, explicit=True)  # the File Meta's, and most datasets'
_IMPLICIT_LE = _Syntax(little=True, explicit=False)  # also an undefined-length UN's (6.2.2)
_EXPLICIT_BE = _Syntax(little=False, explicit=True)


def _walk(src: _Bytes) -> Head:
    meta, syntax, pos = _file_meta(src)
    study = None
    for tag, _vr, length, value in _top_level(src, pos, syntax):
        if tag >= STUDY_UID_TAG:
            if tag == STUDY_UID_TAG and length not in (0, _UNDEFINED):
                study = _text(src.take(value, length)) or None
            break
    return Head(meta.get(_SOP_INSTANCE_UID, ""), meta.get(_TRANSFER_SYNTAX, ""), study)


def top_level(data: bytes) -> dict[int, tuple[bytes, bytes]] | None:
    """Every top-level element of a small encoded file (a C-FIND answer findscu wrote) in an
    explicit VR syntax, as tag -> (VR, value bytes as stored; a sequence's or an undefined
    length's value is b""); None when this walker would have to guess (implicit VR: no VR;
    deflated, unwalkable: see ``read_head``), so the caller asks pydicom."""
    src = _Bytes(data=data, size=len(data))
    out: dict[int, tuple[bytes, bytes]] = {}
    try:
        _meta, syntax, pos = _file_meta(src)
        if not syntax.explicit:
            return None
        for tag, vr, length, value in _top_level(src, pos, syntax):
            undefined = length == _UNDEFINED or vr == b"SQ"
            out[tag] = (vr, b"" if undefined else src.take(value, length))
    except _Unwalkable:
        return None
    return out


def _file_meta(src: _Bytes) -> tuple[dict[int, str], _Syntax, int]:
    """The File Meta's SOP Instance UID and transfer syntax, the dataset's encoding and where
    the dataset starts."""
    if src.take(128, 4) != b"DICM":
        raise _Unwalkable("no DICM prefix")
    pos, meta = 132, {}
    while pos < src.size and src.take(pos, 2) == b"\x02\x00":  # group 0002, little endian
        tag, _vr, length, value = _element(src, pos, _EXPLICIT_LE)
        if length == _UNDEFINED:
            raise _Unwalkable("undefined length in File Meta")
        if tag in (_SOP_INSTANCE_UID, _TRANSFER_SYNTAX):
            meta[tag] = _text(src.take(value, length))
        pos = value + length
    syntax = meta.get(_TRANSFER_SYNTAX, "")
    try:
        uid = UID(syntax)
        if uid.is_deflated:
            raise _Unwalkable("a deflated dataset")
        if uid.is_implicit_VR:
            return meta, _IMPLICIT_LE, pos
        return meta, _EXPLICIT_LE if uid.is_little_endian else _EXPLICIT_BE, pos
    except ValueError:  # a private or unknown transfer syntax: its encoding is not known here
        raise _Unwalkable(f"transfer syntax {syntax!r}") from None


def _top_level(src: _Bytes, pos: int, syntax: _Syntax) -> Iterator[tuple[int, bytes, int, int]]:
    """(tag, VR, length, where the value starts) of each top-level element from ``pos``, in
    ascending tag order (else _Unwalkable), sequences skipped over."""
    last = -1
    while pos < src.size:
        tag, vr, length, value = _element(src, pos, syntax)
        if tag <= last or tag >> 16 == 0xFFFE:
            raise _Unwalkable(f"tag {tag:08X} after {last:08X} at the top level")
        yield tag, vr, length, value
        last, pos = tag, _after(src, vr, length, value, syntax)


def _element(src: _Bytes, pos: int, syntax: _Syntax) -> tuple[int, bytes, int, int]:
    """(tag, VR or b"", value length, where the value starts) of the element at ``pos``."""
    group, elem, rest = syntax.header.unpack(src.take(pos, 8))
    tag = group << 16 | elem
    if group == 0xFFFE or not syntax.explicit:  # items and delimiters have no VR
        return tag, b"", syntax.u32.unpack(rest)[0], pos + 8
    vr = rest[:2]
    if vr in _LONG_VRS:
        return tag, vr, syntax.u32.unpack(src.take(pos + 8, 4))[0], pos + 12
    if not (vr.isalpha() and vr.isupper()):
        raise _Unwalkable(f"VR {vr!r} of {tag:08X}")
    return tag, vr, syntax.u16.unpack(rest[2:])[0], pos + 8


def _after(src: _Bytes, vr: bytes, length: int, value: int, syntax: _Syntax) -> int:
    """Where the element whose value starts at ``value`` ends."""
    if length != _UNDEFINED:
        return value + length
    return _skip_items(src, value, _IMPLICIT_LE if vr == b"UN" else syntax)


def _skip_items(src: _Bytes, pos: int, syntax: _Syntax) -> int:
    """Past a sequence (or encapsulated pixel data) of undefined length: its items, each of a
    defined length or walked to its delimiter, then the sequence delimiter."""
    while True:
        tag, _vr, length, pos = _element(src, pos, syntax)
        if tag == _SEQUENCE_END:
            return pos
        if tag != _ITEM:
            raise _Unwalkable(f"{tag:08X} where an item was expected")
        if length != _UNDEFINED:
            pos += length
            continue
        while True:  # the item's elements, to its delimiter
            tag, vr, length, value = _element(src, pos, syntax)
            if tag == _ITEM_END:
                pos = value
                break
            pos = _after(src, vr, length, value, syntax)


def _text(raw: bytes) -> str:
    """A UI value: ASCII, padded with a NUL (or a space, which some writers use)."""
    return raw.decode("ascii", errors="replace").strip("\x00 ")
