"""Fault injection (issue #6): the loader against real Orthanc (the test bed, through a TCP
proxy where the fault is on the wire) and the stand-in XNAT over real sockets, with the fault
switched on at a chosen moment. Every test ends with ``assert_nothing_lost``: each manifest
study is in XNAT exactly once or in the failure register with the right reason, no duplicate
session, no attempt row lost, the warehouse opens and ``dbt build`` passes."""

from __future__ import annotations

import faulthandler
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.load.runner import run_load
from connectors.warehouse.store import Warehouse
from tests.support.fault_helpers import (
    Template,
    assert_nothing_lost,
    attempts,
    fault_settings,
    invoke,
    sessions_by_uid,
    study_row,
    workspace_from,
)
from tests.support.fault_proxy import FaultProxy
from tests.support.xnat_fixtures import StandinHandle

pytestmark = [pytest.mark.orthanc, pytest.mark.slow]

IMPORT = "/data/services/import"


@pytest.fixture
def proxy(orthanc: Any) -> Iterator[FaultProxy]:
    p = FaultProxy(orthanc.host, orthanc.port)
    p.aet = orthanc.aet
    yield p
    p.close()


LOAD_DEADLINE = 240.0  # a load of three tiny studies that takes longer is hung


def _load(
    settings: Any, deadline: float = LOAD_DEADLINE, **kw: Any
) -> tuple[int, dict[str, Any], Exception | None]:
    """One recorded load, in a thread with a deadline: a loader that hangs after a fault
    fails the test (with every thread's stack on stderr) instead of hanging the suite."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = invoke(settings, "load", lambda rc: run_load(rc, "direct", **kw))
        except BaseException as e:  # surfaced below, in the test's thread
            box["error"] = e

    worker = threading.Thread(target=run, name="load-under-test", daemon=True)
    worker.start()
    worker.join(deadline)
    if worker.is_alive():
        faulthandler.dump_traceback(all_threads=True)
        pytest.fail(f"the load did not finish within {deadline:.0f} s: it hangs")
    if "error" in box:
        raise box["error"]
    return box["result"]  # type: ignore[no-any-return]


def _wait(what: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "the moment to inject the fault never came"
        time.sleep(0.01)


def _imports(standin: StandinHandle) -> list[int]:
    return [status for _m, path, status in standin.server.app.request_log if path == IMPORT]


def _uids(template: Template) -> list[str]:
    return [s.study_instance_uid for s in template.studies]


# ----------------------------------------------------------------------------- XNAT faults


def test_xnat_500_fails_every_study_as_unavailable_and_they_stay_retryable(
    template: Template, orthanc: Any, standin_xnat: StandinHandle, tmp_path: Path
) -> None:
    """It retries XNAT's 500 with backoff, records each study 'xnat_unavailable', stops the
    run as XNAT down (exit 3) once three studies in a row failed so, and keeps them
    retryable (transient) in the register and the manifest; nothing was uploaded twice."""
    settings = fault_settings(workspace_from(template, tmp_path), orthanc, standin_xnat)
    standin_xnat.faults.fail_next(500, 99, IMPORT)
    code, _, err = _load(settings, build_manifest=False)
    assert code == 3, err
    assert "in a row" in str(err)
    assert _imports(standin_xnat) == [500] * 9  # 3 studies x (1 + 2 retries)
    assert len(attempts(settings)) == 9
    standin_xnat.faults.reset()
    reasons = dict.fromkeys(_uids(template), "xnat_unavailable")
    seen = assert_nothing_lost(settings, standin_xnat, template.studies, reasons)
    assert all(seen["register"][u]["is_retryable"] for u in _uids(template))
    assert all(seen["register"][u]["failed_attempts"] == 3 for u in _uids(template))
    manifest = Warehouse(settings.warehouse_path).read_relation("main.ingest_manifest")
    assert {r["study_instance_uid"] for r in manifest} == set(_uids(template))


def test_xnat_503_twice_is_retried_inside_the_run_and_loads(
    template: Template, orthanc: Any, standin_xnat: StandinHandle, tmp_path: Path
) -> None:
    """It loads every study although the first two imports got 503, keeping both failed
    tries as attempt rows."""
    settings = fault_settings(workspace_from(template, tmp_path), orthanc, standin_xnat)
    standin_xnat.faults.fail_next(503, 2, IMPORT)
    code, run, _ = _load(settings, build_manifest=False)
    assert (code, run["loaded"]) == (0, 3)
    seen = assert_nothing_lost(settings, standin_xnat, template.studies, runs=[run])
    failed = [a for a in seen["attempts"] if a["outcome"] == "failed"]
    assert [a["reason_category"] for a in failed] == ["xnat_unavailable"] * 2
    assert not seen["register"]


def test_xnat_timeout_that_xnat_archived_anyway_is_not_duplicated(
    template: Template, orthanc: Any, standin_xnat: StandinHandle, tmp_path: Path
) -> None:
    """It treats an import answered too late as not yet known, not as failed: XNAT archives
    the study anyway, and the loader finds it (in the same attempt or the next; a second
    send that XNAT refuses as a duplicate changes nothing): every study loaded, one session
    each, any 'timeout' row non-final, nothing deleted."""
    settings = fault_settings(
        workspace_from(template, tmp_path), orthanc, standin_xnat, xnat={"timeout": 1.0}, retries=1
    )
    standin_xnat.faults.slow(1.5, IMPORT)
    code, run, _ = _load(settings, build_manifest=False)
    assert (code, run["loaded"], run["failed"]) == (0, 3, 0)
    assert {a["reason_category"] for a in attempts(settings)} <= {"timeout", None}
    _wait(lambda: standin_xnat.server.app.in_flight.get(IMPORT, 0) == 0)
    assert _imports(standin_xnat).count(200) == 3
    log = standin_xnat.server.app.request_log
    assert not [r for r in log if r[0] == "DELETE" and "JSESSION" not in r[1]]
    standin_xnat.faults.reset()
    seen = assert_nothing_lost(settings, standin_xnat, template.studies, runs=[run])
    assert all(seen["in_xnat"][u] == 1 for u in _uids(template))
    assert not seen["register"]


def test_xnat_401_half_way_stops_the_run_and_a_rerun_finishes(
    template: Template, orthanc: Any, standin_xnat: StandinHandle, tmp_path: Path
) -> None:
    """It stops with exit 3 when XNAT starts refusing our session (token expired) while the
    second study is being imported: the first is recorded 'loaded', the second (archived, but
    not verified) gets its failed attempt row ('xnat_unavailable'), and a rerun with valid
    credentials finds both (already_present) and loads the third. One upload at a time, so
    that "the second" is the only one in flight (tests/load/test_uploads.py has two)."""
    workspace = workspace_from(template, tmp_path)
    settings = fault_settings(workspace, orthanc, standin_xnat, uploads_in_flight=1)
    app = standin_xnat.server.app
    standin_xnat.faults.slow(0.5, IMPORT, after=1)

    def expire_during_second_import() -> None:
        _wait(lambda: 200 in _imports(standin_xnat) and app.in_flight.get(IMPORT, 0) > 0)
        standin_xnat.faults.unauthorized_after = 0

    watcher = threading.Thread(target=expire_during_second_import, daemon=True)
    watcher.start()
    code, _, err = _load(settings, build_manifest=False)
    watcher.join(5)
    assert code == 3, err
    assert "401" in str(err)
    first = attempts(settings)
    assert [(a["outcome"], a["reason_category"]) for a in first] == [
        ("loaded", None),
        ("failed", "xnat_unavailable"),
    ]
    archived = sum(sessions_by_uid(standin_xnat).values())
    assert archived == 2
    standin_xnat.faults.reset()
    code, rerun, _ = _load(settings, build_manifest=False)
    assert code == 0
    assert (rerun["already_present"], rerun["loaded"]) == (2, 1)
    assert_nothing_lost(settings, standin_xnat, template.studies, runs=[rerun])


def test_xnat_conflicts_are_recorded_and_not_sent_again(
    template: Template, orthanc: Any, standin_xnat: StandinHandle, tmp_path: Path
) -> None:
    """It records 'xnat_conflict' for a label XNAT holds for another study (nothing sent) and
    for an import XNAT rejects with 409; both stay open, not retryable, out of the manifest."""
    from connectors.testbed.xnat_standin.store import Session

    settings = fault_settings(workspace_from(template, tmp_path), orthanc, standin_xnat)
    taken = template.studies[0]
    with standin_xnat.store.lock:
        standin_xnat.store.archive(
            Session("", "HNC", "", taken.accession_number, "1.2.3.999", "CT"), "OTHER", False
        )
    standin_xnat.faults.fail_next(409, 1, IMPORT)
    code, run, _ = _load(settings, build_manifest=False)
    assert (code, run["failed"], run["loaded"]) == (1, 2, 1)
    seen = assert_nothing_lost(
        settings, standin_xnat, template.studies, {taken.study_instance_uid: "xnat_conflict"}, [run]
    )
    open_rows = list(seen["register"].values())
    assert [r["reason_category"] for r in open_rows] == ["xnat_conflict"] * 2
    assert not any(r["is_retryable"] for r in open_rows)
    manifest = Warehouse(settings.warehouse_path).read_relation("main.ingest_manifest")
    assert not {r["study_instance_uid"] for r in manifest} & set(seen["register"])


# ----------------------------------------------------------------------------- PACS faults


def test_pacs_dropping_the_association_mid_c_get_is_retried_and_loads(
    template: Template, proxy: FaultProxy, standin_xnat: StandinHandle, tmp_path: Path
) -> None:
    """It fails the study whose C-GET lost its association (TCP reset half way) as a transient
    'retrieve_failed' (or 'timeout' when the worker stalls and is replaced), retries it on a
    new association, and loads everything."""
    settings = fault_settings(workspace_from(template, tmp_path), proxy, standin_xnat)
    proxy.cut_after = 12_000  # bytes from the PACS: the association, then part of a study
    code, run, _ = _load(settings, deadline=90.0, build_manifest=False)
    assert proxy.cuts == 1
    assert (code, run["loaded"]) == (0, 3)
    seen = assert_nothing_lost(settings, standin_xnat, template.studies, runs=[run])
    failed = [a for a in seen["attempts"] if a["outcome"] == "failed"]
    assert len(failed) == 1
    assert failed[0]["reason_category"] in ("retrieve_failed", "timeout")


def test_pacs_stopped_during_a_run_stops_it_and_a_rerun_finishes(
    template: Template,
    orthanc_factory: Callable[..., Any],
    pacs_files: list[Path],
    standin_xnat: StandinHandle,
    tmp_path: Path,
) -> None:
    """It ends the run with exit 3 when the PACS goes down in the middle of a retrieve,
    keeping what was recorded; once the PACS is back a rerun loads the rest."""
    uids = set(_uids(template))
    pacs = orthanc_factory([p for p in pacs_files if p.parent.name in uids])
    proxy = FaultProxy(pacs.host, pacs.port)
    try:
        proxy.delay = 0.2  # slow answers, so the stop lands inside a C-GET
        settings = fault_settings(
            workspace_from(template, tmp_path), proxy, standin_xnat, retries=1
        )
        work = settings.work_dir

        def stop_pacs_on_first_file() -> None:
            _wait(lambda: any(p.suffix == ".dcm" for p in work.rglob("*")))
            os.kill(pacs.pid, signal.SIGKILL)  # the PACS goes down hard, mid C-GET
            pacs.stop()

        stopper = threading.Thread(target=stop_pacs_on_first_file, daemon=True)
        stopper.start()
        code, _, err = _load(settings, build_manifest=False)
        stopper.join(15)
        assert not pacs.running
        assert code in (1, 3), err
        pacs.start()
        pacs.upload([p for p in pacs_files if p.parent.name in uids])
        proxy.target = (pacs.host, pacs.port)
        proxy.delay = 0.0
        code, rerun, err = _load(settings, build_manifest=False)
        assert code == 0, err
        assert_nothing_lost(settings, standin_xnat, template.studies, runs=[rerun])
    finally:
        proxy.close()


def test_full_disk_for_retrieved_files_is_disk_full_and_retryable(
    template: Template,
    orthanc: Any,
    standin_xnat: StandinHandle,
    tmp_path: Path,
    tiny_disk: Path,
) -> None:
    """It records 'disk_full' (transient: retried, then kept retryable) when the folder for
    retrieved files has no room, uploads nothing, and leaves no half-written file."""
    settings = fault_settings(
        workspace_from(template, tmp_path), orthanc, standin_xnat, work_dir=str(tiny_disk)
    )
    code, run, _ = _load(settings, build_manifest=False)
    assert (code, run["failed"]) == (1, 3)
    assert _imports(standin_xnat) == []
    assert not list(tiny_disk.rglob("*.part"))
    seen = assert_nothing_lost(
        settings, standin_xnat, template.studies, dict.fromkeys(_uids(template), "disk_full"), [run]
    )
    assert all(r["is_retryable"] for r in seen["register"].values())


def test_more_instances_on_pacs_than_retrieved_is_retrieve_incomplete(
    template: Template, orthanc: Any, standin_xnat: StandinHandle, tmp_path: Path
) -> None:
    """It records 'retrieve_incomplete' with both counts when the PACS's Number of Study
    Related Instances is larger than what its C-GET delivers, and loads the other studies."""
    project = workspace_from(template, tmp_path)
    settings = fault_settings(project, orthanc, standin_xnat, retries=1)
    short = template.studies[0]
    p = template.cohort.patient(short.mrn)
    import datetime as dt

    later = dt.datetime(2026, 11, 3, 9)
    row = study_row(short, p.mrn, p.dicom_name, p.birth_date, "query-2", "query-2-x", later)
    promised = int(row["number_of_study_related_instances"]) + 2
    row["number_of_study_related_instances"] = str(promised)
    Warehouse(settings.warehouse_path).append("pacs_studies", [row])
    code, run, _ = _load(settings)  # builds the manifest from the new C-FIND answer
    assert (code, run["failed"], run["loaded"]) == (1, 1, 2)
    seen = assert_nothing_lost(
        settings,
        standin_xnat,
        template.studies,
        {short.study_instance_uid: "retrieve_incomplete"},
        [run],
    )
    last = [a for a in seen["attempts"] if a["study_instance_uid"] == short.study_instance_uid]
    assert last
    assert {a["files_expected"] for a in last} == {promised}
    assert all(a["files_received"] < promised for a in last)
    assert seen["register"][short.study_instance_uid]["is_retryable"]
    assert sessions_by_uid(standin_xnat)[short.study_instance_uid] == 0
