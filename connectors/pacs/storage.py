"""The storage side of a retrieve: which SOP classes we accept, and writing instances to disk.

Each instance is written as it arrives, as received: the encoded dataset (never decoded) with a
File Meta header naming the transfer syntax the association agreed on, to ``<uid>.dcm.part``
then renamed to ``<SOPInstanceUID>.dcm``. Only one instance is in memory at a time, never a
whole study. The handler never raises: it answers with a DICOM status (0xA700 when the disk is
full, 0xC210 when it cannot understand the request).
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import hashlib
import logging
import os
import re
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import (
    ALL_TRANSFER_SYNTAXES,
    PYNETDICOM_IMPLEMENTATION_UID,
    PYNETDICOM_IMPLEMENTATION_VERSION,
    AllStoragePresentationContexts,
    StoragePresentationContexts,
    evt,
)
from pynetdicom.presentation import PresentationContext
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import register_uid, uid_to_service_class

from connectors.pacs.dicom_head import read_head

logger = logging.getLogger(__name__)

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC210
STATUS_UNEXPECTED_STUDY = 0xC211  # an instance of a study we are not retrieving (C-MOVE)

DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}

# Uncompressed first (what a PACS holds most), then the compressed syntaxes a PACS may store,
# so it can send what it has without transcoding.
TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEG2000Lossless,
    RLELossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSNearLossless,
    JPEG2000,
]


def get_storage_contexts() -> list[PresentationContext]:
    """The storage contexts a C-GET proposes: pynetdicom's 120 common SOP classes.

    A requestor may propose at most 128 contexts; the C-GET and C-FIND models take two. The 120
    cover CT, MR, PET, CR, DX, IO, RF, US, MG, XA, NM, SC, RT (dose, plan, structure set,
    image), SR, the Enhanced/Legacy Converted families and segmentation. A study holding an
    unusual SOP class outside them comes over C-MOVE (``retrieve = "c-move"``), whose storage
    SCP accepts every storage SOP class.
    """
    out = []
    for cx in StoragePresentationContexts:
        c = PresentationContext()
        c.abstract_syntax = cx.abstract_syntax
        c.transfer_syntax = list(TRANSFER_SYNTAXES)
        out.append(c)
    return out


def register_storage_class(uid: str) -> bool:
    """Let pynetdicom take C-STOREs of a storage SOP class it does not list (a private or new
    one the PACS holds); True when it was unknown. Without this pynetdicom aborts the
    association when such an instance arrives."""
    if issubclass(uid_to_service_class(uid), StorageServiceClass):
        return False
    register_uid(uid, "P2XStorage_" + uid.replace(".", "_"), StorageServiceClass)
    return True


def abstract_syntax(cx: PresentationContext) -> str:
    """A context's SOP Class UID (always set on the contexts built here)."""
    return str(cx.abstract_syntax)


def scp_storage_contexts() -> list[PresentationContext]:
    """Every storage SOP class pynetdicom knows in every transfer syntax it knows, for our
    C-MOVE storage SCP (no 128 limit): the PACS proposes what it stores, we accept it as is."""
    everything: list[str] = list(TRANSFER_SYNTAXES)
    everything += [ts for ts in ALL_TRANSFER_SYNTAXES if ts not in everything]
    out = []
    for cx in AllStoragePresentationContexts:
        c = PresentationContext()
        c.abstract_syntax = cx.abstract_syntax
        c.transfer_syntax = list(everything)
        out.append(c)
    return out


_UID_RE = re.compile(r"^[0-9][0-9.]{0,63}$")


def file_name_for(sop_instance_uid: str) -> str:
    """``<SOPInstanceUID>.dcm``; a UID that is not digits and dots becomes a hash."""
    uid = (sop_instance_uid or "").strip().rstrip("\x00").strip()
    if _UID_RE.match(uid) and ".." not in uid:
        return f"{uid}.dcm"
    return "x" + hashlib.sha256(uid.encode("utf-8", "replace")).hexdigest()[:40] + ".dcm"


@dataclass
class StudySink:
    """Where one study's instances go, and what arrived so far (thread-safe counters)."""

    study_instance_uid: str
    folder: Path
    files: int = 0
    bytes: int = 0
    disk_full: bool = False
    errors: int = 0
    last_error: str = ""
    last_activity: float = field(default_factory=time.monotonic)  # the last instance written
    #: SOP Instance UID -> the transfer syntax it arrived in (the accepted context's)
    received: dict[str, str] = field(default_factory=dict)
    #: SOP Instance UID -> the transfer syntax the PACS said it stores (empty: it did not say)
    stored: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def write(self, sop_instance_uid: str, data: builtins.bytes, syntax: str = "") -> int:
        """Write one encoded instance; returns the DICOM status for the C-STORE response."""
        name = file_name_for(sop_instance_uid)
        final = self.folder / name
        part = self.folder / (name + ".part")
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
            finally:
                os.close(fd)
            os.replace(part, final)
        except OSError as e:
            with contextlib.suppress(OSError):
                part.unlink()
            with self._lock:
                self.errors += 1
                self.last_error = f"{e.strerror or e}"
                if e.errno in DISK_FULL_ERRNOS:
                    self.disk_full = True
            logger.warning("could not write an instance to %s: %s", self.folder, e.strerror)
            return STATUS_OUT_OF_RESOURCES
        with self._lock:
            self.files += 1
            self.bytes += len(data)
            self.last_activity = time.monotonic()
            self.received[sop_instance_uid] = syntax
        return STATUS_SUCCESS

    def rescan(self) -> None:
        """Count the folder as it is now: with several receiving processes
        (``storage_scp.py``), others may have written instances of this study into it."""
        files = size = 0
        for f in self.folder.iterdir():
            if f.suffix != ".dcm" or not f.is_file():
                continue
            files += 1
            size += f.stat().st_size
            uid = f.stem
            if uid not in self.received:
                head = read_head(f)
                if head is not None:  # unreadable: its syntax stays unknown
                    uid = head.sop_instance_uid or uid
                    self.received[uid] = head.transfer_syntax
        with self._lock:
            self.files, self.bytes = files, size

    def conversions(self) -> tuple[int | None, int | None, int | None]:
        """(as stored, converted, converted from lossless to lossy) among the instances
        received whose stored transfer syntax the PACS told; all None when it told none."""
        known = [(ts, self.stored[uid]) for uid, ts in self.received.items() if uid in self.stored]
        if not known:
            return None, None, None
        same = sum(1 for got, held in known if got == held)
        lossy = sum(1 for got, held in known if got != held and got in LOSSY and held not in LOSSY)
        return same, len(known) - same, lossy


LOSSY = frozenset({JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLSNearLossless, JPEG2000})


def encoded_instance(event: evt.Event) -> tuple[str, bytes, str] | None:
    """The SOP Instance UID, the encoded dataset with File Meta and the transfer syntax it came
    in, or None if unreadable. The bytes are pynetdicom's ``event.encoded_dataset()``'s, the
    File Meta written by ``file_meta`` rather than built as a pydicom dataset and encoded (a
    tenth of a C-MOVE's Python time per instance, benchmarks/load)."""
    try:
        request = event.request
        uid = str(getattr(request, "AffectedSOPInstanceUID", "") or "")
        syntax = str(getattr(event.context, "transfer_syntax", "") or "")
        sop_class = str(getattr(request, "AffectedSOPClassUID", "") or "")
        if not uid or not sop_class:
            raise ValueError("no Affected SOP Class or Instance UID")
        stream = request.DataSet.getvalue()  # type: ignore[union-attr]
        return uid, b"".join((file_meta(sop_class, uid, syntax), stream)), syntax
    except Exception as e:  # the handler never raises: any failure is a DICOM status
        logger.warning("C-STORE request not understood: %s", e)
        return None


def _element(tag: int, vr: bytes, value: bytes) -> bytes:
    """One File Meta element, explicit VR little endian (PS3.5 7.1.2; OB's long form)."""
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr
    if vr == b"OB":
        return head + struct.pack("<2xL", len(value)) + value
    return head + struct.pack("<H", len(value)) + value


def _ui(uid: str) -> bytes:
    value = uid.encode("ascii", "replace")
    return value + b"\0" * (len(value) % 2)


def _sh(text: str) -> bytes:
    value = text.encode("ascii", "replace")
    return value + b" " * (len(value) % 2)


_VERSION = _element(0x00020001, b"OB", b"\x00\x01")
_IMPLEMENTATION = b"".join((
    _element(0x00020012, b"UI", _ui(PYNETDICOM_IMPLEMENTATION_UID)),
    _element(0x00020013, b"SH", _sh(PYNETDICOM_IMPLEMENTATION_VERSION)),
))  # fmt: skip


def file_meta(sop_class: str, sop_instance: str, syntax: str) -> bytes:
    """Preamble, ``DICM`` and the File Meta (PS3.10 7.1) pynetdicom writes for a C-STORE:
    the same elements and bytes as ``pynetdicom.dsutils.create_file_meta`` encoded by pydicom
    (tests/pacs/test_retrieve.py holds them equal)."""
    body = b"".join((
        _VERSION,
        _element(0x00020002, b"UI", _ui(sop_class)),
        _element(0x00020003, b"UI", _ui(sop_instance)),
        _element(0x00020010, b"UI", _ui(syntax)),
        _IMPLEMENTATION,
    ))  # fmt: skip
    length = _element(0x00020000, b"UL", struct.pack("<L", len(body)))
    return b"".join((b"\x00" * 128, b"DICM", length, body))


def study_uid_of(data: bytes) -> str | None:
    """The Study Instance UID of an encoded instance (with its File Meta), from its head only
    (``dicom_head.py``); None when unreadable (answered with 0xC210)."""
    head = read_head(data)
    return head.study_instance_uid if head is not None else None
