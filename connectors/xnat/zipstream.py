"""A zip of DICOM files built while it is being sent: constant memory whatever the study size.

``zipfile`` writes into a sink that only counts its position (no ``seek``), so it falls back to
data descriptors and never needs the whole archive; the generator hands each block to
``requests`` as soon as it is written. ZIP_STORED: DICOM pixel data barely compresses and CPU
is what a cycle is short of.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

BLOCK = 1 << 20  # 1 MiB read from disk at a time


class _Sink:
    """A write-only stream that buffers one block; ``zipfile`` asks it ``tell()`` only."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.position = 0

    def write(self, data: bytes) -> int:
        if data:
            self.parts.append(bytes(data))
            self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


@dataclass
class ZipProgress:
    """Counters the caller reads while (and after) the body is sent."""

    files: int = 0
    payload_bytes: int = 0  # DICOM bytes read from disk
    sent_bytes: int = 0  # zip bytes handed to the HTTP client


def zip_stream(
    files: Iterable[Path], progress: ZipProgress | None = None, block: int = BLOCK
) -> Iterator[bytes]:
    """Yield a ZIP_STORED archive of ``files`` (stored flat, by file name) block by block."""
    prog = progress if progress is not None else ZipProgress()
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:  # type: ignore[call-overload]
        for path in files:
            info = zipfile.ZipInfo(path.name, date_time=(2000, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            with open(path, "rb") as src, zf.open(info, "w", force_zip64=True) as dest:
                while chunk := src.read(block):
                    dest.write(chunk)
                    prog.payload_bytes += len(chunk)
                    out = sink.take()
                    if out:
                        prog.sent_bytes += len(out)
                        yield out
            prog.files += 1
    tail = sink.take()
    if tail:
        prog.sent_bytes += len(tail)
        yield tail
