"""One ``raw.runs`` row per CLI invocation: who ran what, when, on which inputs, with what result.

``RunContext`` writes the row at the start (outcome ``running``) and completes it at the end,
whatever happens, each in its own short transaction (the warehouse lock is taken per
transaction, never for the invocation: ``lock.py``); a run killed outright stays ``running``
forever, which is itself the record that it never finished.
"""

from __future__ import annotations

import getpass
import json
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectors import __version__
from connectors.clock import utcnow
from connectors.config import Settings
from connectors.files import sha256_file
from connectors.warehouse import journal, lock
from connectors.warehouse.backend import open_warehouse
from connectors.warehouse.store import Warehouse

SECRET_FLAGS = ("--password", "--pass", "--token", "--secret")
RULES_SEED = Path("seeds") / "study_description_rules.csv"


def new_run_id() -> str:
    """Sortable and unique: ``20261125T081500Z-3f2a9c1d``."""
    return utcnow().strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:8]


def scrub_arguments(argv: Sequence[str]) -> list[str]:
    """Arguments as typed, with the value of anything that looks like a secret removed."""
    out: list[str] = []
    hide_next = False
    for a in argv:
        if hide_next:
            out.append("***")
            hide_next = False
        elif a.startswith(SECRET_FLAGS):
            if "=" in a:
                out.append(a.split("=", 1)[0] + "=***")
            else:
                out.append(a)
                hide_next = True
        else:
            out.append(a)
    return out


@dataclass
class RunContext:
    """The state of one invocation, handed to the function a command calls."""

    settings: Settings
    command: str
    arguments: list[str]
    run_id: str = field(default_factory=new_run_id)
    input_files: list[dict[str, str]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def warehouse(self) -> Warehouse:
        return open_warehouse(self.settings)

    @property
    def project_dir(self) -> Path:
        return self.settings.project_dir

    def add_input(self, path: Path) -> str:
        """Record an input file's SHA-256 (in the runs row); returns it."""
        digest = sha256_file(path)
        self.input_files.append({"path": str(path), "sha256": digest})
        with self.warehouse.connect() as con:
            con.execute(
                "update raw.runs set input_files = ? where run_id = ?",
                [json.dumps(self.input_files), self.run_id],
            )
        return digest

    def save_summary(self) -> None:
        """Write the summary so far into the run's row (``run`` keeps its progress there)."""
        with self.warehouse.connect() as con:
            con.execute(
                "update raw.runs set summary = ? where run_id = ?",
                [json.dumps(self.summary, default=str), self.run_id],
            )

    def rules_sha256(self) -> str | None:
        seed = self.project_dir / RULES_SEED
        return sha256_file(seed) if seed.is_file() else None

    def start(self) -> None:
        lock.configure(command=self.command)  # names us in the lock file while we hold it
        # What a command killed while the warehouse was busy journaled: written first.
        journal.replay(self.warehouse)
        now = utcnow()
        self.warehouse.append(
            "runs",
            [
                {
                    "run_id": self.run_id,
                    "command": self.command,
                    "arguments": json.dumps(scrub_arguments(self.arguments)),
                    "user_name": _user(),
                    "host_name": socket.gethostname(),
                    "tool_version": __version__,
                    "config_path": str(self.settings.source) if self.settings.source else None,
                    "input_files": json.dumps(self.input_files),
                    "rules_sha256": self.rules_sha256(),
                    "started_at": now,
                    "outcome": "running",
                    "loaded_at": now,
                }
            ],
        )

    def finish(self, outcome: str, exit_code: int) -> None:
        journal.replay(self.warehouse)  # our own journaled rows, before the run is done
        with self.warehouse.connect() as con:
            con.execute(
                "update raw.runs set finished_at = ?, outcome = ?, exit_code = ?, summary = ?,"
                " rules_sha256 = ? where run_id = ?",
                [
                    utcnow(),
                    outcome,
                    exit_code,
                    json.dumps(self.summary, default=str),
                    self.rules_sha256(),
                    self.run_id,
                ],
            )


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


__all__ = ["RunContext", "new_run_id", "scrub_arguments"]
