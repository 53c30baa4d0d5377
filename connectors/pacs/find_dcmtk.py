"""The optional findscu back end of the query (``[pacs] query_backend = "dcmtk"``).

Measured in benchmarks/query: pynetdicom spends ~10 ms of CPU on a patient's C-FIND with ten
answers (its reactor and DIMSE threads, decoding each answer) where dcmtk's ``findscu`` spends
~1.4 ms, on the same cores the PACS needs. So this back end hands a batch of patients'
identifiers, as query files, to one ``findscu`` (one association, ``TCP_NODELAY=1``, the
``[pacs]`` AE titles and timeouts), which writes every answer to a file (``-X``) and logs, per
request in order, "Sending Find Request", "Writing response dataset to file: …" and "Received
Final Find Response (<status>)" (dcmtk's dcmnet/libsrc/dfindscu.cc, the status words of
``DU_cfindStatusString`` in dcmnet/libsrc/diutil.cc). A request the log gives no final status
for (the association ended first, a status we cannot read) is returned unanswered; the caller
asks it again over pynetdicom, as it does a capped answer that must be split (``query.py``).

The query files and answers hold MRNs and names: they live in an owner-only temporary folder,
removed when the batch is read, and the log (which repeats each request) is never logged whole.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmwrite
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.valuerep import PersonName

from connectors.config import PacsConfig
from connectors.pacs.dcmtk_tools import refused, scu_args, tool_env
from connectors.pacs.find_answer import read_answer

#: Patients per findscu (one association each): few enough that a window's end or a stop is
#: seen within seconds, many enough that starting findscu and associating are paid rarely.
BATCH = 100

_SENT = "Sending Find Request"
_FILE_RE = re.compile(r"Writing response dataset to file: (.+?)\s*$")
_FINAL_RE = re.compile(r"Received Final Find Response \((.*)\)\s*$")
_UNKNOWN_RE = re.compile(r"Unknown Status: 0x([0-9a-fA-F]+)")
#: dcmtk's words for C-FIND statuses (``DU_cfindStatusString``): any 0xCxxx is "UnableToProcess".
_STATUS_WORDS = {
    "Success": 0x0000,
    "Pending": 0xFF00,
    "Pending: WarningUnsupportedOptionalKeys": 0xFF01,
    "Cancel: MatchingTerminatedDueToCancelRequest": 0xFE00,
    "Refused: OutOfResources": 0xA700,
    "Refused: SOPClassNotSupported": 0x0122,
    "Failed: IdentifierDoesNotMatchSOPClass": 0xA900,
    "Failed: UnableToProcess": 0xC000,
}


@dataclass
class Answer:
    """One request's answers (``raw.pacs_studies`` columns) and final status; ``final`` None:
    not answered (the association ended first, or a status this module cannot read)."""

    rows: list[dict[str, str | None]] = field(default_factory=list)
    final: int | None = None


def status_code(words: str) -> int | None:
    """A status from the words findscu logs for it; None when they are not dcmtk's."""
    if words in _STATUS_WORDS:
        return _STATUS_WORDS[words]
    m = _UNKNOWN_RE.fullmatch(words.strip())
    return int(m.group(1), 16) if m else None


def parse_log(log: str, asked: int) -> tuple[list[list[str]], list[int | None]]:
    """Each request's answer files and final status, in the order they were sent."""
    files: list[list[str]] = [[] for _ in range(asked)]
    finals: list[int | None] = [None] * asked
    i = -1
    for line in log.splitlines():
        if _SENT in line:
            i += 1
        elif 0 <= i < asked:
            if m := _FILE_RE.search(line):
                files[i].append(m.group(1))
            elif m := _FINAL_RE.search(line):
                finals[i] = status_code(m.group(1))
    return files, finals


#: VRs of a study-level identifier's keys whose value is text with a 2-byte length; padded
#: to an even length with a space (a UI with a NUL), PS3.5 6.2
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "PN", "SH", "TM", "UI"})


def identifier_bytes(ds: Dataset) -> bytes | None:
    """``ds`` as the bare Explicit VR Little Endian dataset ``dcmwrite`` would write, built
    directly (dcmwrite took ~0.4 ms a query, a tenth of the dcmtk back end's Python time on
    1,000 patients): only for top-level text elements of ASCII values and no character set;
    anything else is None, for dcmwrite. tests/pacs/test_find_dcmtk.py holds the two equal."""
    if "SpecificCharacterSet" in ds:
        return None
    out = bytearray()
    for elem in ds:
        value = str(elem.value) if isinstance(elem.value, PersonName) else elem.value
        if elem.VR not in _TEXT_VRS or not isinstance(value, str) or not value.isascii():
            return None
        raw = value.encode("ascii")
        if len(raw) % 2:
            raw += b"\0" if elem.VR == "UI" else b" "
        if len(raw) > 0xFFFF:
            return None
        out += elem.tag.group.to_bytes(2, "little") + elem.tag.element.to_bytes(2, "little")
        out += elem.VR.encode("ascii") + len(raw).to_bytes(2, "little") + raw
    return bytes(out)


class FindscuRun:
    """One findscu over one association, started at once: ``wait`` until its association has
    ended, ``answers`` to read what it brought back (the caller may start the next run between
    the two, so the PACS answers the next batch while this one is read). A context manager:
    the folder of query and answer files is removed, and a findscu still running ended."""

    def __init__(self, tool: str, p: PacsConfig, queries: list[Dataset]) -> None:
        self.p = p
        self.asked = len(queries)
        self.folder = Path(tempfile.mkdtemp(prefix="pacs2xnat-findscu-"))  # mode 0700
        self._proc: subprocess.Popen[bytes] | None = None
        try:
            answers = self.folder / "answers"
            answers.mkdir()
            names = []
            for i, ds in enumerate(queries):
                path = self.folder / f"q{i:05d}.dcm"
                if (data := identifier_bytes(ds)) is not None:
                    path.write_bytes(data)
                else:
                    dcmwrite(path, ds, implicit_vr=False, little_endian=True)  # a bare dataset
                names.append(str(path))
            args = [*scu_args(tool, p), "-X", "-od", str(answers), p.host, str(p.port), *names]
            with open(self.folder / "log", "wb") as log:  # a file: a full pipe would stop it
                self._proc = subprocess.Popen(
                    args, cwd=self.folder, env=tool_env(), stdout=log, stderr=subprocess.STDOUT
                )
        except BaseException:
            self.close()
            raise

    def wait(self) -> None:
        """Until findscu has ended (and with it its association)."""
        if self._proc is not None:
            self._proc.wait()

    def answers(self) -> list[Answer]:
        """One ``Answer`` per query, in order; ``PacsUnreachable`` when no association could be
        had. Removes the files."""
        try:
            self.wait()
            log = (self.folder / "log").read_bytes().decode(errors="replace")
            if (error := refused(self.p, log, "findscu")) is not None:
                raise error
            files, finals = parse_log(log, self.asked)
            out = []
            for found, final in zip(files, finals, strict=True):
                try:
                    rows = [read_answer(Path(f)) for f in found]
                except (OSError, ValueError, InvalidDicomError):  # unreadable: asked again
                    rows, final = [], None
                out.append(Answer(rows, final))
            return out
        finally:
            self.close()

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> FindscuRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def findscu_batch(tool: str, p: PacsConfig, queries: list[Dataset]) -> list[Answer]:
    """Send ``queries`` over one findscu association; one ``Answer`` per query, in order.
    ``PacsUnreachable`` when no association could be had."""
    if not queries:
        return []
    with FindscuRun(tool, p, queries) as run:
        return run.answers()


__all__ = [
    "BATCH",
    "Answer",
    "FindscuRun",
    "findscu_batch",
    "identifier_bytes",
    "parse_log",
    "status_code",
]
