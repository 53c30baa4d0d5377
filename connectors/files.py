"""Files that hold patient data: written whole or not at all, owner-only, and their hashes.

Every file pacs2xnat writes for a person (the ingest CSV, the failure register, the report, the
rules seed and workbook) goes through ``atomic_write``: a temporary file beside the target,
created 0600, flushed and fsynced, then ``os.replace``d over it; on any failure the temporary
file is removed and the target is untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


def atomic_write(
    path: Path,
    write: Callable[[IO[Any]], object],
    *,
    binary: bool,
    mode: int = 0o600,
    encoding: str = "utf-8",
    newline: str | None = "\n",
) -> None:
    """Call ``write(f)`` on a temporary file beside ``path`` and replace ``path`` with it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with _open_fd(fd, binary, encoding, newline) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _open_fd(fd: int, binary: bool, encoding: str, newline: str | None) -> Iterator[IO[Any]]:
    if binary:
        with os.fdopen(fd, "wb") as fb:
            yield fb
    else:
        with os.fdopen(fd, "w", encoding=encoding, newline=newline) as ft:
            yield ft


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
