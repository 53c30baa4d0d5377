"""What a study paused mid-retrieval left for the rerun (``--no-wait`` at a window's end).

The instances that arrived move from the run's folder (removed when the run ends) to
``<work_dir>/paused/<StudyInstanceUID>/``, owner-only, with a record beside it
(``<StudyInstanceUID>.json``: how many instances, when, until when the PACS is closed). The
next load that retrieves the study takes the folder back into its own run folder and asks the
PACS only for the rest (``pacs/retrieve/resume.py``); the study is uploaded once, whole. The
next direct load removes the folders of studies no longer in the manifest (they left it, or
another loader loaded them: ``discard_unwanted``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import shutil
from pathlib import Path

from connectors.files import atomic_write
from connectors.load.context import LoadContext

logger = logging.getLogger(__name__)

PAUSED = "paused"


def after_pause(ctx: LoadContext, uid: str, dest: Path, files: int) -> bool:
    """A window ended while the study arrived (``files`` of it in ``dest``): wait for the next
    window (True: continue with the rest), or with ``--no-wait`` keep the folder for the rerun
    and let the study go (False; no attempt row: the manifest still holds it)."""
    logger.warning(
        "a PACS window ended during a study: %d instance(s) kept, the rest after the pause", files
    )
    if ctx.admit():
        return True
    keep_for_rerun(ctx.rc.settings.work_dir, uid, dest, files, ctx.gate.paused_until)
    ctx.claims.release(uid)
    return False


def keep_for_rerun(
    work_dir: Path, uid: str, dest: Path, files: int, until: dt.datetime | None
) -> None:
    """Move ``dest`` (the study's partial folder) out of the run folder, with its record."""
    home = work_dir / PAUSED
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    target = home / uid
    shutil.rmtree(target, ignore_errors=True)
    os.replace(dest, target)
    record = {
        "study_instance_uid": uid,
        "instances_kept": files,
        "paused_until": until.isoformat(timespec="minutes") if until else None,
    }
    atomic_write(home / f"{uid}.json", lambda f: f.write(json.dumps(record) + "\n"), binary=False)
    logger.info("kept %d instance(s) of a paused study for the rerun in %s", files, home)


def take_kept(work_dir: Path, uid: str, dest: Path) -> int:
    """Take a paused study's folder back as ``dest``; how many instances it holds (0: none)."""
    kept = work_dir / PAUSED / uid
    if not kept.is_dir():
        return 0
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.replace(kept, dest)
    with contextlib.suppress(FileNotFoundError):
        (work_dir / PAUSED / f"{uid}.json").unlink()
    n = sum(1 for f in dest.iterdir() if f.suffix == ".dcm")
    logger.info("continuing a study paused in an earlier run: %d instance(s) kept", n)
    return n


def discard_unwanted(work_dir: Path, wanted: set[str]) -> int:
    """Remove the kept instances (and record) of every paused study not in ``wanted`` (the
    manifest: it left it, or another loader loaded it); how many were removed."""
    home = work_dir / PAUSED
    if not home.is_dir():
        return 0
    gone = 0
    for child in home.iterdir():
        uid = child.name.removesuffix(".json")
        if uid in wanted:
            continue
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
            gone += 1
        else:
            with contextlib.suppress(FileNotFoundError):
                child.unlink()
    if gone:
        logger.info("removed the kept instances of %d paused studies no longer to load", gone)
    return gone
