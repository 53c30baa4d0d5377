"""A C-FIND answer findscu wrote to a file (``-X``), as ``raw.pacs_studies`` columns.

pydicom's ``dcmread`` and the conversion of each value took ~0.8 ms an answer (measured: 10,000
answers, a third of `pacs2xnat query`'s CPU with ``query_backend = "dcmtk"``, on the cores the
PACS needs too). An answer is a dozen short text elements in explicit VR little endian, so
this reads their bytes with ``dicom_head.top_level`` and turns each into the string pydicom
would give ``find.answer_row`` (pydicom 3's ``values.py``: ``convert_string``, ``convert_text``,
``convert_UI``, ``convert_PN``), for the character sets one Python codec decodes exactly: none
(pydicom's default), ISO_IR 6, ISO_IR 100 (Latin-1), ISO_IR 192 (UTF-8). Anything else (another
character set, ISO 2022 escapes, implicit VR, a VR or an IS value these rules do not cover, a
file it cannot walk) is read by pydicom, so the answer is pydicom's wherever these rules would
have to guess; tests/pacs/test_find_answer.py holds the two to the same rows.

Each file is read with three system calls (``_read``: open, read, close) where
``Path.read_bytes`` makes nine (a stat twice, a tty check, two seeks, a read to see the end):
each gives up the GIL, and the two query workers and the writer then hand it round. Measured
(1,000 answer-sized files, one other thread busy in Python): ~230-280 µs a file against
~20-80 µs; in the whole query, ``Path.open`` alone had been 11-14 % of the samples.
"""

from __future__ import annotations

import os
import re
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.datadict import tag_for_keyword

from connectors.pacs.dicom_head import top_level
from connectors.pacs.find import RETURN_KEYS, answer_row

_CHARSET_TAG = 0x00080005
#: tag -> raw.pacs_studies column, the character set last (as answer_row orders them)
_COLUMNS: dict[int, str] = {
    **{int(tag_for_keyword(k) or 0): column for k, column in RETURN_KEYS.items()},
    _CHARSET_TAG: "specific_character_set",
}
#: Specific Character Set -> the codec pydicom decodes SH, LO and PN with
_CODECS = {"": "latin_1", "ISO_IR 6": "latin_1", "ISO_IR 100": "latin_1", "ISO_IR 192": "utf_8"}
#: VRs pydicom decodes as Latin-1 whatever the character set, stripping trailing NULs and spaces
_PLAIN_VRS = frozenset((b"AE", b"AS", b"CS", b"DA", b"DT", b"TM", b"UI"))
_TEXT_VRS = frozenset((b"SH", b"LO", b"UC"))  # per value, in the character set
_INTEGER = re.compile(r"[0-9]+")


class _Pydicom(Exception):
    """An answer these rules do not cover: pydicom reads it."""


def read_answer(path: Path) -> dict[str, str | None]:
    """The answer in ``path`` as ``raw.pacs_studies`` columns (``find.answer_row``'s values).
    ``OSError``, ``ValueError`` or pydicom's ``InvalidDicomError`` when it cannot be read."""
    data = _read(path)
    elements = top_level(data)
    if elements is not None:
        try:
            return _row(elements)
        except _Pydicom:
            pass
    return answer_row(dcmread(BytesIO(data), force=True))  # the bytes read above


#: Read at a time: an answer is well under 1 KiB, so one read brings all of it.
_CHUNK = 1 << 16


def _read(path: Path) -> bytes:
    """The whole file: a read shorter than asked is its end (a regular file's reads are short
    only there), so a small file takes one read."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = [os.read(fd, _CHUNK)]
        while len(chunks[-1]) == _CHUNK:
            chunks.append(os.read(fd, _CHUNK))
    finally:
        os.close(fd)
    return b"".join(chunks)


def _row(elements: dict[int, tuple[bytes, bytes]]) -> dict[str, str | None]:
    charset = elements.get(_CHARSET_TAG)
    charset_text = _plain(charset[1]) if charset else ""
    codec = _CODECS.get(charset_text)
    if codec is None:
        raise _Pydicom(f"character set {charset_text!r}")
    row: dict[str, str | None] = {}
    for tag, column in _COLUMNS.items():
        found = elements.get(tag)
        row[column] = None if found is None else _value(*found, codec)
    return row


def _plain(raw: bytes) -> str:
    return raw.decode("latin_1").rstrip(" \x00")


def _value(vr: bytes, raw: bytes, codec: str) -> str:
    if b"\x1b" in raw:  # an ISO 2022 escape: pydicom switches character sets on it
        raise _Pydicom("escape sequence")
    if vr in _PLAIN_VRS:
        return _plain(raw)
    try:
        if vr in _TEXT_VRS:
            return "\\".join(v.rstrip("\x00 ") for v in raw.decode(codec).split("\\"))
        if vr == b"PN":
            return raw.rstrip(b"\x00 ").decode(codec)
    except UnicodeDecodeError:
        raise _Pydicom("not in its character set") from None
    if vr == b"IS":  # pydicom's IS keeps each value as sent, less its spaces
        text = _plain(raw)
        values = [v.strip(" ") for v in text.split("\\")]
        if text == "" or all(_INTEGER.fullmatch(v) for v in values):
            return "\\".join(values)
    raise _Pydicom(f"VR {vr!r}")


__all__ = ["read_answer"]
