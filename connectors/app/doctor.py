"""``pacs2xnat doctor``: every connection and setting checked, one line each, with the fix.

Checks are independent: one failing does not hide the next. The exit code is the worst of
them (0 all pass; 2 config or warehouse; 3 PACS or XNAT unreachable).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from connectors import console
from connectors.config import Settings
from connectors.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_UNREACHABLE, Pacs2XnatError
from connectors.warehouse.backend import open_warehouse
from connectors.warehouse.lock import WarehouseLock

#: A Patient ID no real patient has: C-FIND permission is checked without touching real data.
PROBE_PATIENT_ID = "PACS2XNAT-DOCTOR-PROBE"
PROBE_STUDY_UID = "1.2.826.0.1.3680043.10.1234.0.0"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    exit_code: int = EXIT_OK


def _run(name: str, fix: str, fn: Callable[[], str], code: int) -> Check:
    try:
        return Check(name, True, fn())
    except Pacs2XnatError as e:
        return Check(name, False, str(e), fix, e.exit_code if e.exit_code > 1 else code)
    except Exception as e:  # a check must report, never crash the doctor
        return Check(name, False, f"{type(e).__name__}: {e}", fix, code)


def run_checks(settings: Settings) -> list[Check]:
    p, x = settings.pacs, settings.xnat
    where = f"{p.called_aet}@{p.host}:{p.port}"
    return [
        Check(
            "config",
            True,
            f"{settings.source}" if settings.source else "no file: embedded defaults",
        ),
        _run(
            "warehouse writable",
            f"check permissions on {settings.warehouse_dir}",
            lambda: _warehouse(settings),
            EXIT_BAD_INPUT,
        ),
        _run(
            "dbt parse",
            "run `dbt parse` in the project folder to see the error",
            lambda: _dbt_parse(settings),
            EXIT_BAD_INPUT,
        ),
        _run(
            "PACS C-ECHO",
            f"check [pacs] host/port/called_aet, and that {where} knows "
            f"our AE title {p.calling_aet!r}",
            lambda: _echo(settings),
            EXIT_UNREACHABLE,
        ),
        _run(
            "PACS C-FIND",
            f"ask the PACS admin to allow study-level C-FIND (Study Root) for {p.calling_aet!r}",
            lambda: _find(settings),
            EXIT_UNREACHABLE,
        ),
        _run(
            "PACS retrieve", _retrieve_fix(settings), lambda: _retrieve(settings), EXIT_UNREACHABLE
        ),
        _run(
            "XNAT login and project",
            f"check [xnat] url and project, and XNAT_USER / XNAT_PASS (or ~/.netrc) for {x.url}",
            lambda: _xnat(settings),
            EXIT_UNREACHABLE,
        ),
    ]


def _warehouse(settings: Settings) -> str:
    wh = open_warehouse(settings)
    if not wh.exclusive:  # PostgreSQL: connect, and the raw schema is there
        wh.ensure()
        return wh.label
    lock = WarehouseLock(settings.warehouse_path)
    lock.acquire("doctor")
    try:
        wh.ensure()
        mode = oct(wh.path.stat().st_mode & 0o777)
    finally:
        lock.release()
    return f"{settings.warehouse_path} ({mode})"


def _dbt_parse(settings: Settings) -> str:
    from connectors.warehouse.dbt import run_dbt

    res = run_dbt(
        ["parse"], project_dir=settings.project_dir, warehouse_path=settings.warehouse_path
    )
    if not res.success:
        raise Pacs2XnatError("dbt parse failed")
    return f"project {settings.project_dir}"


def _echo(settings: Settings) -> str:
    from connectors.pacs.find import echo

    status = echo(settings)
    if status != 0:
        raise Pacs2XnatError(f"C-ECHO answered status 0x{status:04X}")
    return f"{settings.pacs.called_aet} at {settings.pacs.host}:{settings.pacs.port} answers"


def _find(settings: Settings) -> str:
    from connectors.pacs.find import Window, find_studies, pacs_association

    with pacs_association(settings) as assoc:
        rows = find_studies(assoc, PROBE_PATIENT_ID, Window(None, None))
    return f"study-level C-FIND accepted ({len(rows)} answers for a probe Patient ID)"


def _retrieve_fix(settings: Settings) -> str:
    p = settings.pacs
    if p.retrieve == "c-move":
        return (
            f"register our AE {p.move_destination or p.calling_aet!r} on the PACS as a "
            f"C-MOVE destination at this host, port {p.receive_port}"
        )
    return "ask the PACS admin to allow C-GET for our AE title, or set [pacs] retrieve = c-move"


def _retrieve(settings: Settings) -> str:
    from pydicom.dataset import Dataset
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # generated at import
        StudyRootQueryRetrieveInformationModelGet,
        StudyRootQueryRetrieveInformationModelMove,
    )

    from connectors.pacs.find import pacs_association

    p = settings.pacs
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = PROBE_STUDY_UID
    if p.retrieve == "c-get":
        model = StudyRootQueryRetrieveInformationModelGet
        with pacs_association(settings, (model,)) as assoc:
            accepted = [cx.abstract_syntax for cx in assoc.accepted_contexts]
        if model not in accepted:
            raise Pacs2XnatError("the PACS does not accept C-GET (Study Root)")
        return "C-GET (Study Root) accepted"
    if not p.move_destination:
        raise Pacs2XnatError("[pacs] move_destination is empty (needed for c-move)")
    model = StudyRootQueryRetrieveInformationModelMove
    with pacs_association(settings, (model,)) as assoc:
        statuses = [
            int(s.Status)
            for s, _ in assoc.send_c_move(ds, p.move_destination, model)
            if s and "Status" in s
        ]
    final = statuses[-1] if statuses else None
    if final in (0xA801,):
        raise Pacs2XnatError(f"the PACS does not know the destination {p.move_destination!r}")
    if final is None:
        raise Pacs2XnatError("no answer to a probe C-MOVE")
    return f"C-MOVE to {p.move_destination!r} accepted (probe status 0x{final:04X})"


def _xnat(settings: Settings) -> str:
    from connectors.xnat.client import XnatClient

    with XnatClient(settings) as client:
        client.check_project()
    return f"{settings.xnat.url} project {settings.xnat.project} readable and writable"


def print_checks(checks: list[Check]) -> int:
    for c in checks:
        mark = "[green]pass[/]" if c.ok else "[bold red]FAIL[/]"
        console.out.print(f"{mark}  {c.name}: ", end="")
        console.out.print(c.detail, markup=False, highlight=False)
        if not c.ok and c.fix:
            console.out.print("      fix: ", end="")
            console.out.print(c.fix, markup=False, highlight=False)
    return max((c.exit_code for c in checks if not c.ok), default=EXIT_OK)


__all__ = ["Check", "print_checks", "run_checks"]
