"""Where output goes: data (tables, --json) to stdout, messages and progress to stderr.

Logging is configured once here (``setup_logging``), from the CLI callback. Modules only do
``logger = logging.getLogger(__name__)``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.text import Text

from connectors.seams.pynetdicom_logging import hide_identifiers

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

_state = {"quiet": False, "json": False, "verbose": False}
SECRET_ENV = ("XNAT_PASS", "XNAT_TOKEN", "SMTP_PASS", "DICOMWEB_PASS", "DICOMWEB_TOKEN")
HANDLER_NAME = "pacs2xnat"  # our log handlers, replaced when logging is set up again


def configure(*, quiet: bool, json_mode: bool, verbose: bool) -> None:
    _state.update(quiet=quiet, json=json_mode, verbose=verbose)


def progress_enabled() -> bool:
    """Progress bars only for a person at a terminal: not with --quiet, --json or a pipe."""
    return not (_state["quiet"] or _state["json"]) and sys.stderr.isatty()


def json_mode() -> bool:
    return bool(_state["json"])


def verbose() -> bool:
    return bool(_state["verbose"])


def say(message: str) -> None:
    """A message for the person running the command (stderr), unless --quiet or --json."""
    if not (_state["quiet"] or _state["json"]):
        err.print(Text(message), highlight=False)


class SecretFilter(logging.Filter):
    """Defence in depth: the XNAT password (and any token) never reaches a log line, even if a
    library logs a URL or a request body with it. Names never reach logs because no module
    logs them and pynetdicom's identifier logging is off."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets = [v for k in SECRET_ENV if len(v := os.environ.get(k, "")) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            text = record.getMessage()
            if any(s in text for s in self.secrets):
                for s in self.secrets:
                    text = text.replace(s, "***")
                record.msg, record.args = text, None
        return True


def error(message: str) -> None:
    """An error for the person: "Error: ..." on stderr, printed literally (no Rich markup)."""
    err.print(Text.assemble(("Error: ", "bold red"), message), highlight=False)


def show(renderable: object) -> None:
    """A table or panel for the person (stderr), unless --quiet or --json."""
    if not (_state["quiet"] or _state["json"]):
        err.print(renderable)


def snapshot() -> dict[str, bool]:
    """The output settings, to restore after running a command inside another (the demo)."""
    return dict(_state)


def restore(state: dict[str, bool]) -> None:
    _state.update(state)


def setup_logging(log_file: Path | None, verbose: bool) -> None:
    """A log file per run (owner-only) at INFO, or DEBUG with DICOM/HTTP detail under --verbose.

    pynetdicom's logger stays at WARNING unless --verbose, and it never logs response
    identifiers (they carry patient names).
    """
    root = logging.getLogger()
    for h in list(root.handlers):
        if h.get_name() == HANDLER_NAME:
            root.removeHandler(h)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    redact = SecretFilter()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        stream = os.fdopen(fd, "a", encoding="utf-8")
        fh = logging.StreamHandler(stream)
        fh.setFormatter(fmt)
        fh.addFilter(redact)
        fh.set_name(HANDLER_NAME)
        root.addHandler(fh)
    if verbose:
        sh = logging.StreamHandler(sys.stderr)
        sh.setFormatter(fmt)
        sh.setLevel(logging.DEBUG)
        sh.addFilter(redact)
        sh.set_name(HANDLER_NAME)
        root.addHandler(sh)
    hide_identifiers()
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if verbose else logging.WARNING)
    for noisy in ("urllib3", "xnat", "requests"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)
