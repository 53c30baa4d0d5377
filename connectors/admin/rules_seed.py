"""The rules seed ``seeds/study_description_rules.csv``: its rows, read and rendered.

Descriptions are compared by ``normalise_description``, the Python twin of
``macros/normalise_description.sql``.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from connectors.errors import InputError
from connectors.warehouse.runs import RULES_SEED

SEED_COLUMNS = ("description", "decision", "note", "decided_on", "decided_by")
DECISIONS = ("include", "exclude")


def _strip_accents(text: str) -> str:
    """DuckDB's ``strip_accents``: canonical decomposition, combining marks dropped."""
    return "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))


def normalise_description(text: str | None) -> str | None:
    """A study description as people mean it; the exact twin of the dbt macro.

    Accents, case, punctuation and runs of white space do not matter; ``&`` is ``and``, ``w/``
    is ``with`` and ``w/o`` is ``without``. ``"CT Head & Neck w/ contrast"`` ->
    ``"ct head and neck with contrast"``; nothing left -> None.
    """
    if text is None:
        return None
    s = _strip_accents(str(text)).lower().replace("&", " and ")
    s = re.sub(r"(^|[^a-z0-9])w/o([^a-z0-9]|$)", r"\1 without \2", s)
    s = re.sub(r"(^|[^a-z0-9])w/", r"\1 with ", s)
    s = re.sub(r"[^a-z0-9]+", " ", s).strip(" ")
    return s or None


@dataclass(frozen=True)
class Rule:
    """One seed row."""

    description: str
    decision: str
    note: str
    decided_on: str
    decided_by: str

    @property
    def key(self) -> tuple[str, str]:
        return (normalise_description(self.description) or "", self.decision)

    def as_row(self) -> dict[str, str]:
        return {c: getattr(self, c) for c in SEED_COLUMNS}


def seed_path(project_dir: Path) -> Path:
    return Path(project_dir) / RULES_SEED


def read_seed(path: Path) -> list[Rule]:
    """The rules seed; a missing file is an empty list, a malformed one an ``InputError``."""
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError("the rules seed is not UTF-8 text", file=path) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if tuple(reader.fieldnames or ()) != SEED_COLUMNS:
        raise InputError(
            f"the rules seed must have the header {','.join(SEED_COLUMNS)} "
            f"(found {','.join(reader.fieldnames or ()) or 'nothing'})",
            file=path,
            row=1,
        )
    rules = []
    for n, rec in enumerate(reader, start=2):
        decision = (rec.get("decision") or "").strip().lower()
        if decision not in DECISIONS:
            raise InputError(
                f"decision {rec.get('decision')!r} must be include or exclude",
                file=path,
                row=n,
                column="decision",
            )
        rules.append(
            Rule(
                description=(rec.get("description") or "").strip(),
                decision=decision,
                note=(rec.get("note") or "").strip(),
                decided_on=(rec.get("decided_on") or "").strip(),
                decided_by=(rec.get("decided_by") or "").strip(),
            )
        )
    return rules


def render_seed(rules: Iterable[Rule]) -> bytes:
    """The seed's bytes: header, then rows sorted by decision, then description (as people read)."""
    ordered = sorted(
        rules, key=lambda r: (r.decision, r.description.casefold(), r.description, r.note)
    )
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=SEED_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in ordered:
        w.writerow(r.as_row())
    return buf.getvalue().encode("utf-8")
