"""The one exception family of pacs2xnat, and the exit code each member means.

Built like ``xnat/exceptions.py``: every error a connector can raise is a ``Pacs2XnatError``;
``xnat.*``, ``requests.*``, ``pynetdicom`` and ``duckdb`` errors are translated at the edge and
never leak. ``app/cli.py`` maps them to exit codes in one place (``Pacs2XnatError.exit_code``).

Exit codes (DESIGN.md): 0 all done; 1 finished but some studies failed (a return value, not an
exception); 2 bad input or config; 3 PACS, XNAT (or the warehouse) unavailable.
"""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_UNREACHABLE = 3


class Pacs2XnatError(Exception):
    """Base of every error pacs2xnat raises on purpose."""

    exit_code = EXIT_BAD_INPUT


class InputError(Pacs2XnatError, ValueError):
    """A file a person gave us cannot be used. Names the file, and the row and column if any."""

    exit_code = EXIT_BAD_INPUT

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        row: int | None = None,
        column: str | None = None,
        sheet: str | None = None,
    ) -> None:
        self.file = None if file is None else str(file)
        self.row = row
        self.column = column
        self.sheet = sheet
        self.detail = message
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.file is not None:
            where.append(self.file)
        if self.sheet is not None:
            where.append(f"sheet {self.sheet}")
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        return f"{', '.join(where)}: {self.detail}" if where else self.detail


class ConfigError(Pacs2XnatError, ValueError):
    """The configuration file (or environment) is missing, malformed or inconsistent."""

    exit_code = EXIT_BAD_INPUT


class StepFailed(Pacs2XnatError):
    """A step of the cycle could not finish (e.g. ``dbt build`` failed); nothing after it runs."""

    exit_code = EXIT_BAD_INPUT


class Unavailable(Pacs2XnatError):
    """Something we must talk to cannot be reached or refuses us."""

    exit_code = EXIT_UNREACHABLE


class PacsUnreachable(Unavailable):
    """No association with the PACS: down, wrong address, or our AE title rejected."""


class XnatUnreachable(Unavailable):
    """XNAT does not answer, or refuses our login / project."""


class WarehouseBusy(Unavailable):
    """Another pacs2xnat (or dbt, or a SQL client) is writing to the warehouse file."""


class StudyFailed(Pacs2XnatError):
    """One study could not be loaded. Not fatal: the run records it and goes on.

    ``reason_category`` is one of ``seeds/failure_reasons.csv`` (``retrieve_incomplete``,
    ``rejected_by_xnat``, ``xnat_unavailable``, ``timeout``, ...), which alone says whether a
    retry may help (``connectors/load/retry_policy.py``). The counts go to
    ``raw.ingest_attempts``.
    """

    exit_code = EXIT_SOME_FAILED

    def __init__(
        self,
        reason_category: str,
        message: str,
        *,
        files_expected: int | None = None,
        files_received: int | None = None,
        conversions: tuple[int | None, int | None, int | None] = (None, None, None),
    ) -> None:
        super().__init__(message)
        self.reason_category = reason_category
        self.files_expected = files_expected
        self.files_received = files_received
        #: instances received as stored / converted / converted lossless -> lossy (None: the
        #: PACS did not say what it stores)
        self.conversions = conversions


class QueryFailed(Pacs2XnatError):
    """One patient's C-FIND could not be completed. Not fatal: recorded in raw.pacs_queries.

    ``status_code`` is the PACS's final status as hex (``0xA700``) or None when the
    association was lost; ``transient`` says whether reopening the association and asking
    again in the same run may help (association lost, timeout, out of resources).
    """

    exit_code = EXIT_SOME_FAILED

    def __init__(self, message: str, *, status_code: str | None = None, transient: bool = False):
        super().__init__(message)
        self.status_code = status_code
        self.transient = transient
