"""The query's findscu back end (``[pacs] query_backend = "dcmtk"``) against real PACS:
Orthanc, dcmtk's dcmqrscp and the in-process demo SCP (for the statuses and faults it can be
told to give). What findscu brings back must be what pynetdicom brings back, answer by answer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest
from typer.testing import CliRunner

from connectors.app.cli import app
from connectors.errors import PacsUnreachable
from connectors.pacs.dcmtk_tools import find_tool
from connectors.pacs.find import Window, find_patient, pacs_association, study_query
from connectors.pacs.find_dcmtk import findscu_batch, parse_log, status_code
from connectors.testbed.cohort import Cohort
from connectors.testbed.orthanc import free_port
from connectors.warehouse.store import Warehouse
from tests.support.pacs_fixtures import master_patient_rows, pacs_settings, write_query_config

DB = Path("warehouse") / "pacs2xnat.duckdb"


def _active(cohort: Cohort) -> list[str]:
    return sorted(p.mrn for p in cohort.patients if p.status == "active")


def _rows(rows: list[dict[str, str | None]]) -> list[tuple[tuple[str, str | None], ...]]:
    return sorted(tuple(sorted(r.items())) for r in rows)


def _findscu() -> str:
    return find_tool("findscu", "query_backend")


@pytest.mark.parametrize("server", ["orthanc", "dcmqrscp"])
def test_findscu_brings_back_what_pynetdicom_does(
    server: str, request: pytest.FixtureRequest, pacs_cohort: Cohort
) -> None:
    """Every answer, every return key, names decoded the same (ISO_IR 100 and 192), for a
    batch on one association; a patient the PACS does not know has none, with Success."""
    pacs = request.getfixturevalue(server)
    settings = pacs_settings(pacs)
    accented = [p.mrn for p in pacs_cohort.patients if not p.dicom_name.isascii()]
    mrns = [*sorted({*_active(pacs_cohort)[:6], *accented[:2]}), "NOSUCHPATIENT"]
    answers = findscu_batch(_findscu(), settings.pacs, [study_query(m, Window()) for m in mrns])
    assert len(answers) == len(mrns)
    with pacs_association(settings) as assoc:
        for mrn, answer in zip(mrns, answers, strict=True):
            expected = find_patient(assoc, mrn, Window()).studies
            assert answer.final == 0x0000
            assert _rows(answer.rows) == _rows(expected), mrn
    assert sum(len(a.rows) for a in answers) > len(mrns)  # the comparison compared something


def test_findscu_without_a_pacs_is_unreachable() -> None:
    """Nobody listening: ``PacsUnreachable`` naming host, port and both AE titles."""

    class Down:
        host, port, aet = "127.0.0.1", free_port(), "HOSPITALPACS"

    settings = pacs_settings(Down(), acse_timeout=2.0)
    with pytest.raises(PacsUnreachable) as e:
        findscu_batch(_findscu(), settings.pacs, [study_query("MRN1", Window())])
    assert f"127.0.0.1:{Down.port}" in str(e.value)
    assert "'HOSPITALPACS'" in str(e.value)
    assert "'PACS2XNAT'" in str(e.value)


def test_status_words_are_dcmtks() -> None:
    """The words DU_cfindStatusString gives each status (dcmnet/libsrc/diutil.cc), read back;
    what is not dcmtk's is None (the patient is then asked again over pynetdicom)."""
    assert status_code("Success") == 0x0000
    assert status_code("Cancel: MatchingTerminatedDueToCancelRequest") == 0xFE00
    assert status_code("Refused: OutOfResources") == 0xA700
    assert status_code("Failed: UnableToProcess") == 0xC000
    assert status_code("Unknown Status: 0xb000") == 0xB000
    assert status_code("something else") is None
    files, finals = parse_log("I: Sending Find Request (MsgID 1)\n", 2)
    assert files == [[], []]  # cut short: neither answered
    assert finals == [None, None]


# --------------------------------------------------------------------------- the whole command


def _seed(ws: Path, cohort: Cohort) -> None:
    Warehouse(ws / DB).append("master_patients", master_patient_rows(cohort))


def _sql(ws: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(ws / DB), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def _summary(res: Any) -> dict[str, Any]:
    return json.loads(res.stdout[res.stdout.index("{") :])


@pytest.mark.slow
@pytest.mark.orthanc
def test_query_by_findscu_splits_capped_answers_and_finds_every_study_once(
    workspace: Path, cli: CliRunner, orthanc_factory: Any, pacs_files: Any, pacs_cohort: Cohort
) -> None:
    """Orthanc capped at 4 answers (Cancel 0xFE00): the capped patients are asked again and
    split, every active patient's studies arrive exactly once, names decoded, a rerun asks
    nothing."""
    capped = orthanc_factory(pacs_files, limit_find_results=4)
    write_query_config(workspace, capped, query_backend="dcmtk")
    _seed(workspace, pacs_cohort)
    res = cli.invoke(app, ["--json", "query"])
    assert res.exit_code == 0, res.output
    summary = _summary(res)
    active = set(_active(pacs_cohort))
    expected = {s.study_instance_uid for s in pacs_cohort.studies if s.mrn in active}
    assert summary["patients_queried"] == len(active)
    assert summary["patients_failed"] == 0
    assert summary["sub_queries"] > summary["patients_queried"]  # the cap forced splits
    uids = [r[0] for r in _sql(workspace, "select study_instance_uid from raw.pacs_studies")]
    assert sorted(uids) == sorted(expected)
    for p in pacs_cohort.patients:
        if p.status == "active" and not p.dicom_name.isascii():
            names = _sql(
                workspace,
                "select distinct patient_name from raw.pacs_studies where query_mrn = ?",
                [p.mrn],
            )
            assert names == [(p.dicom_name,)]
    again = cli.invoke(app, ["--json", "query"])
    assert again.exit_code == 0, again.output
    assert _summary(again)["patients_queried"] == 0


@pytest.mark.slow
def test_query_by_findscu_splits_a_cap_that_ends_with_success(
    workspace: Path, cli: CliRunner, demo_pacs_factory: Any, pacs_cohort: Cohort
) -> None:
    """A PACS that stops quietly at its cap (Success after exactly ``find_result_cap``
    answers): those patients are asked again and split; every study arrives once."""
    pacs = demo_pacs_factory(result_cap=3, cap_status="success")
    write_query_config(workspace, pacs, query_backend="dcmtk", find_result_cap=3)
    _seed(workspace, pacs_cohort)
    some = _active(pacs_cohort)[:5]
    res = cli.invoke(app, ["--json", "query", *[a for m in some for a in ("--mrn", m)]])
    assert res.exit_code == 0, res.output
    expected = {s.study_instance_uid for m in some for s in pacs_cohort.studies_of(m)}
    assert max(len(pacs_cohort.studies_of(m)) for m in some) >= 3  # some were capped
    uids = [r[0] for r in _sql(workspace, "select study_instance_uid from raw.pacs_studies")]
    assert sorted(uids) == sorted(expected)


@pytest.mark.slow
@pytest.mark.parametrize(("status", "retried"), [(0xC000, False), (0xA700, True)])
def test_query_by_findscu_records_a_failure_status(
    workspace: Path,
    cli: CliRunner,
    demo_pacs_factory: Any,
    pacs_cohort: Cohort,
    status: int,
    retried: bool,
) -> None:
    """A failure status is recorded per patient with its hex code, exit 1; out of resources
    (transient) is asked again (over pynetdicom, ``retries`` times) before it is recorded."""
    pacs = demo_pacs_factory(find_status=status)
    write_query_config(workspace, pacs, query_backend="dcmtk", retries=1, max_associations=1)
    _seed(workspace, pacs_cohort)
    some = _active(pacs_cohort)[:2]
    res = cli.invoke(app, ["query", *[a for m in some for a in ("--mrn", m)]])
    assert res.exit_code == 1, res.output
    rows = _sql(workspace, "select mrn, outcome, status_code from raw.pacs_queries")
    assert sorted(rows) == [(m, "failed", f"0x{status:04X}") for m in some]
    asked = [r["identifier"]["PatientID"] for r in pacs.requests_of("C-FIND")]
    assert asked == (some + [m for m in some for _ in range(2)] if retried else some)
    assert _sql(workspace, "select count(*) from raw.pacs_studies") == [(0,)]


@pytest.mark.slow
def test_query_by_findscu_asks_again_what_a_lost_association_left(
    workspace: Path, cli: CliRunner, demo_pacs_factory: Any, pacs_cohort: Cohort
) -> None:
    """The association findscu had is aborted at its first C-FIND: that patient and the rest of
    the batch are asked again, each once, and every study arrives."""
    pacs = demo_pacs_factory(abort_finds=1)
    write_query_config(workspace, pacs, query_backend="dcmtk", max_associations=1)
    _seed(workspace, pacs_cohort)
    a, b, c = _active(pacs_cohort)[:3]
    res = cli.invoke(app, ["query", "--mrn", a, "--mrn", b, "--mrn", c])
    assert res.exit_code == 0, res.output
    outcomes = dict(_sql(workspace, "select mrn, outcome from raw.pacs_queries"))
    assert outcomes == {a: "success", b: "success", c: "success"}
    asked = [r["identifier"]["PatientID"] for r in pacs.requests_of("C-FIND")]
    assert asked == [a, a, b, c]
    got = {r[0] for r in _sql(workspace, "select study_instance_uid from raw.pacs_studies")}
    assert got == {s.study_instance_uid for m in (a, b, c) for s in pacs_cohort.studies_of(m)}
