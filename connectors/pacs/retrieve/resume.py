"""A study's retrieval that a PACS window's end interrupted (``[pacs] windows``), and what it
left: the instances that arrived stay in the study's folder, named by SOP Instance UID
(``storage.file_name_for``), so the folder itself says where the retrieval is; continuing it
asks the PACS only for what is not there (``wado.py``), and the study is uploaded once, whole.

``RetrievalPaused`` is raised by ``Retriever.retrieve(..., stop=...)`` when ``stop()`` said so
after an instance was written; the loader (``load/direct.py``) waits for the next window (or,
with ``--no-wait``, keeps the folder for the rerun) and calls ``retrieve`` again on the same
folder.
"""

from __future__ import annotations

import contextlib
from pathlib import Path


class RetrievalPaused(Exception):
    """The window ended during a study: ``files`` instances are in ``folder``, the rest not."""

    def __init__(self, study_instance_uid: str, folder: Path, files: int) -> None:
        super().__init__(
            f"study {study_instance_uid}: paused at a window's end with {files} instance(s) kept"
        )
        self.study_instance_uid = study_instance_uid
        self.folder = folder
        self.files = files


def held_in(folder: Path) -> set[str]:
    """The file names of the instances already in ``folder`` (a paused retrieval's); a ``.part``
    left by an instance that did not finish is removed (it is asked for again)."""
    if not folder.is_dir():
        return set()
    names = set()
    for f in folder.iterdir():
        if f.name.endswith(".part"):
            with contextlib.suppress(OSError):
                f.unlink()
        elif f.suffix == ".dcm" and f.is_file():
            names.add(f.name)
    return names
