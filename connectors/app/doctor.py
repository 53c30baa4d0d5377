"""``pacs2xnat doctor``: every connection and setting checked, one line each, with the fix.

Checks are independent: one failing does not hide the next. The exit code is the worst of
them (0 all pass; 2 config or warehouse; 3 PACS or XNAT unreachable).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from connectors import console
from connectors.config import Settings
from connectors.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_UNREACHABLE, Pacs2XnatError
from connectors.warehouse.backend import open_warehouse

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
    p = settings.pacs
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
        *(_dicomweb_checks(settings) if p.protocol == "dicomweb" else _dimse_checks(settings)),
        *_xnat_checks(settings),
    ]


def _dimse_checks(settings: Settings) -> list[Check]:
    p = settings.pacs
    where = f"{p.called_aet}@{p.host}:{p.port}"
    return [
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
            "PACS offers",
            "ask the PACS admin to allow C-GET for our AE title, or set [pacs] retrieve = "
            "'c-move' with a move_destination the PACS knows",
            lambda: _offers(settings),
            EXIT_UNREACHABLE,
        ),
    ]


def _dicomweb_checks(settings: Settings) -> list[Check]:
    """``[pacs] protocol = "dicomweb"``: QIDO-RS and WADO-RS instead of C-ECHO/C-FIND/C-GET."""
    url = settings.pacs.dicomweb_url
    return [
        _run(
            "PACS DICOMweb QIDO-RS",
            f"check [pacs] dicomweb_url ({url or 'empty'}) and DICOMWEB_USER / DICOMWEB_PASS "
            "or DICOMWEB_TOKEN",
            lambda: _qido(settings),
            EXIT_UNREACHABLE,
        ),
        _run(
            "PACS DICOMweb WADO-RS",
            "ask the PACS admin to allow WADO-RS study retrieval (multipart, transfer-syntax=*)",
            lambda: _wado(settings),
            EXIT_UNREACHABLE,
        ),
    ]


def _xnat_checks(settings: Settings) -> list[Check]:
    """Login and project, then what a real load needs (``xnat/readiness.py``)."""
    from connectors.xnat.client import XnatClient
    from connectors.xnat.readiness import readiness

    x = settings.xnat
    fix = f"check [xnat] url and project, and XNAT_USER / XNAT_PASS (or ~/.netrc) for {x.url}"
    try:
        with XnatClient(settings) as client:
            client.check_project()
            first = Check("XNAT login and project", True, f"{x.url} project {x.project} readable")
            more = [
                Check(name, ok, detail, fix, EXIT_OK if ok else EXIT_UNREACHABLE)
                for name, ok, detail, fix in readiness(client, x.mode)
            ]
            return [first, *more]
    except Pacs2XnatError as e:
        code = e.exit_code if e.exit_code > 1 else EXIT_UNREACHABLE
        return [Check("XNAT login and project", False, str(e), fix, code)]


def _qido(settings: Settings) -> str:
    from connectors.pacs.dicomweb import DicomwebClient
    from connectors.pacs.find import Window, find_studies

    client = DicomwebClient(settings.pacs)
    try:
        client.check()
        rows = find_studies(client, PROBE_PATIENT_ID, Window(None, None))
    finally:
        client.close()
    return f"{client.describe()}: QIDO-RS study query accepted ({len(rows)} for a probe)"


def _wado(settings: Settings) -> str:
    from connectors.pacs.dicomweb import DicomwebClient
    from connectors.pacs.storage import StudySink

    client = DicomwebClient(settings.pacs)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                client.retrieve(PROBE_STUDY_UID, StudySink(PROBE_STUDY_UID, Path(tmp)))
            except Pacs2XnatError as e:
                if getattr(e, "reason_category", "") != "not_found_on_pacs":
                    raise
    finally:
        client.close()
    return "WADO-RS answers a study retrieval (probe study: not found, as expected)"


def _warehouse(settings: Settings) -> str:
    wh = open_warehouse(settings)
    wh.ensure()  # DuckDB: under the writer lock, waiting (bounded) for another's transaction
    if not wh.exclusive:  # PostgreSQL: connected, and the raw schema is there
        return wh.label
    mode = oct(wh.path.stat().st_mode & 0o777)
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
    from connectors.pacs.find import Window, find_studies, judge_final, pacs_association

    if settings.pacs.query_backend == "dcmtk":  # the probe by the findscu the query will use
        from connectors.pacs.dcmtk_tools import find_tool
        from connectors.pacs.find import study_query
        from connectors.pacs.find_dcmtk import findscu_batch

        tool = find_tool("findscu", "query_backend")
        probe = study_query(PROBE_PATIENT_ID, Window(None, None))
        [answer] = findscu_batch(tool, settings.pacs, [probe])
        judge_final(answer.final)
        return f"study-level C-FIND by {tool} accepted ({len(answer.rows)} answers for a probe)"
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


def _offers(settings: Settings) -> str:
    """C-GET offered or not, C-MOVE destination known or not, the syntaxes accepted for a
    probe (``pacs/offers.py``); fails only when the configured method is refused."""
    from connectors.pacs.offers import probe_offers

    offers = probe_offers(settings)
    if settings.pacs.retrieve == "c-get" and not offers.c_get.startswith("offered"):
        raise Pacs2XnatError(offers.summary())
    if settings.pacs.retrieve == "c-move" and "unknown" in offers.c_move:
        raise Pacs2XnatError(offers.summary())
    return offers.summary()


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
