"""What the fault-injection tests share: a warehouse whose manifest holds a few real studies of
the test-bed Orthanc (built once, copied per test), settings and a config file pointing at the
PACS (or a proxy in front of it) and the stand-in XNAT, recorded invocations, and the one
assertion every fault test ends with (``assert_nothing_lost``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from connectors.config import LoadConfig, Settings, WarehouseConfig
from connectors.errors import Pacs2XnatError
from connectors.testbed.cohort import Cohort, Study, raw_master_rows
from connectors.warehouse.dbt import copy_project, run_dbt
from connectors.warehouse.runs import RunContext
from connectors.warehouse.store import Warehouse
from connectors.xnat.sync import run_sync
from tests.support.cohort_warehouse import includable_studies, seed_decisions
from tests.support.load_helpers import attempts, expected_files
from tests.support.pacs_fixtures import pacs_settings
from tests.support.xnat_fixtures import StandinHandle, xnat_settings

WAREHOUSE = Path("warehouse") / "pacs2xnat.duckdb"


@dataclass
class Template:
    """A project copy and a built warehouse whose manifest holds ``studies``."""

    project: Path
    studies: list[Study]
    cohort: Cohort


def raw_rows(cohort: Cohort, studies: list[Study], run_id: str, day: dt.datetime) -> dict:
    """master_patients, pacs_queries and pacs_studies rows as the connectors append them."""
    patients = raw_master_rows(cohort, "import-1", day, sheet=None)
    queries, rows = [], []
    for s in studies:
        p = cohort.patient(s.mrn)
        qid = f"{run_id}-{s.study_instance_uid}"
        queries.append(
            {
                "run_id": run_id,
                "loaded_at": day,
                "query_id": qid,
                "mrn": p.mrn,
                "started_at": day,
                "finished_at": day,
                "outcome": "success",
                "studies_found": 1,
                "sub_queries": 1,
            }
        )
        rows.append(study_row(s, p.mrn, p.dicom_name, p.birth_date, run_id, qid, day))
    return {"master_patients": patients, "pacs_queries": queries, "pacs_studies": rows}


def study_row(
    s: Study, mrn: str, name: str, birth: dt.date, run_id: str, qid: str, day: dt.datetime
) -> dict[str, Any]:
    """One C-FIND answer; Number of Study Related Instances is what the test-bed PACS holds."""
    return {
        "run_id": run_id,
        "loaded_at": day,
        "query_id": qid,
        "queried_at": day,
        "query_mrn": mrn,
        "accession_number": s.accession_number,
        "patient_id": mrn,
        "study_date": s.dicom_study_date,
        "study_time": s.study_time.strftime("%H%M%S"),
        "study_description": s.description,
        "study_instance_uid": s.study_instance_uid,
        "modalities_in_study": "\\".join(s.modalities),
        "number_of_study_related_instances": str(expected_files(s)),
        "patient_name": name,
        "patient_birth_date": birth.strftime("%Y%m%d"),
    }


def make_template(root: Path, cohort: Cohort, n: int) -> Template:
    """``n`` studies the pipeline selects (computed from the cohort and the rules seed), their
    PACS rows and the master list appended, and one ``dbt build``."""
    picked = includable_studies(cohort, seed_decisions())[:n]
    project = copy_project(root / "project")
    wh = Warehouse(project / WAREHOUSE)
    wh.ensure()
    for table, rows in raw_rows(cohort, picked, "query-1", dt.datetime(2026, 11, 2, 9)).items():
        wh.append(table, rows)
    result = run_dbt(["build"], project_dir=project, warehouse_path=wh.path)
    assert result.success, result.failures
    manifest = {r["study_instance_uid"] for r in wh.read_relation("main.ingest_manifest")}
    assert manifest == {s.study_instance_uid for s in picked}
    return Template(project, picked, cohort)


@pytest.fixture(scope="session")
def template(
    orthanc: Any, pacs_cohort: Cohort, tmp_path_factory: pytest.TempPathFactory
) -> Template:
    """Three studies of the test-bed Orthanc in a built manifest (one dbt build per session),
    shared by the fault tests; each test works on its own copy (``workspace_from``)."""
    return make_template(tmp_path_factory.mktemp("faults"), pacs_cohort, 3)


def workspace_from(template: Template, tmp: Path) -> Path:
    """A private copy of the template's project and warehouse for one test (with dbt's
    target/, so its builds parse partially: a third faster)."""
    project = tmp / "project"
    shutil.copytree(template.project, project, ignore=shutil.ignore_patterns("logs", "*.lock"))
    return project


def fault_settings(
    project: Path, pacs: Any, standin: StandinHandle, *, xnat: dict | None = None, **load: Any
) -> Settings:
    base = Settings(base_dir=project)
    base = dataclasses.replace(
        base,
        warehouse=WarehouseConfig(path=str(project / WAREHOUSE)),
        load=LoadConfig(
            **{"work_dir": str(project / "work"), "backoff_seconds": 0.05, "retries": 2, **load}
        ),
    )
    base = xnat_settings(standin, base, **(xnat or {}))
    return pacs_settings(pacs, base, dimse_timeout=5.0, network_timeout=5.0)


def write_config(settings: Settings, path: Path) -> Path:
    """The same settings as a pacs2xnat.toml, for the CLI in a subprocess."""
    lines = []
    for section, values in settings.public_dict().items():
        if section == "source":
            continue
        lines.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            elif isinstance(value, int | float):
                lines.append(f"{key} = {value}")
            elif isinstance(value, list | tuple):  # e.g. [pacs] windows, [notify] mail_to
                lines.append(f"{key} = {json.dumps(list(value))}")
            else:
                lines.append(f'{key} = "{value}"')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def invoke(
    settings: Settings, command: str, fn: Callable[[RunContext], dict[str, Any]]
) -> tuple[int, dict[str, Any], Exception | None]:
    """One recorded invocation, as ``cli.invocation`` does: a runs row started and finished
    with the outcome and exit code. Returns (exit code, summary, the error if any)."""
    rc = RunContext(settings=settings, command=command, arguments=[])
    rc.start()
    code, error = 0, None
    try:
        rc.summary.update(fn(rc))
        code = int(rc.summary.get("exit_code", 0))
    except Pacs2XnatError as e:
        code, error = e.exit_code, e
    finally:
        outcome = {0: "success", 1: "partial"}.get(code, "failed")
        rc.finish(outcome, code)
    return code, {"run_id": rc.run_id, **rc.summary}, error


def sessions_by_uid(standin: StandinHandle) -> Counter[str]:
    with standin.store.lock:
        return Counter(s.uid for s in standin.store.sessions.values())


def assert_nothing_lost(
    settings: Settings,
    standin: StandinHandle,
    studies: list[Study],
    reasons: dict[str, str] | None = None,
    runs: list[dict[str, Any]] = (),  # type: ignore[assignment]
) -> dict[str, Any]:
    """The assertion every fault test ends with: a sync, then ``dbt build`` passes on the
    warehouse (which opens); every manifest study is in XNAT exactly once or in the register
    with the expected reason; no duplicate sessions; no attempt row lost (each finished run's
    reported studies have their rows; every 'loaded' row's study is in XNAT; every fault
    answer the stand-in gave an import has its failed row); no retrieved file left on disk.
    Returns what it read."""
    code, _, err = invoke(settings, "sync", run_sync)
    assert code == 0, err
    result = run_dbt(
        ["build", "--exclude-resource-type", "unit_test"],
        project_dir=settings.project_dir,
        warehouse_path=settings.warehouse_path,
    )
    assert result.success, result.failures
    wh = Warehouse(settings.warehouse_path)
    register = {r["study_instance_uid"]: r for r in wh.read_relation("main.ingest_failures")}
    rows = attempts(settings)
    in_xnat = sessions_by_uid(standin)
    with standin.store.lock:
        labels = Counter((s.subject_id, s.label) for s in standin.store.sessions.values() if s.uid)
    assert all(n == 1 for n in labels.values()), labels
    assert all(n == 1 for n in in_xnat.values()), in_xnat
    for s in studies:
        uid = s.study_instance_uid
        if in_xnat[uid] == 1:  # whatever the last attempt said, XNAT has it: not a failure
            assert uid not in register, register.get(uid)
            assert any(a["study_instance_uid"] == uid for a in rows), uid
        else:
            assert uid in register, f"{uid} is neither in XNAT nor in the register"
            assert register[uid]["is_open"], register[uid]
            assert register[uid]["stage"] == "attempt", register[uid]
            if reasons and uid in reasons:
                assert register[uid]["reason_category"] == reasons[uid], register[uid]
    for a in rows:
        if a["outcome"] == "loaded":
            assert in_xnat[a["study_instance_uid"]] == 1, a
        if a["outcome"] == "failed":
            assert a["reason_category"], a
    for run in runs:
        mine = {a["study_instance_uid"] for a in rows if a["run_id"] == run["run_id"]}
        reported = sum(int(run.get(k, 0)) for k in ("loaded", "already_present", "failed"))
        assert len(mine) == reported, (run, mine)
    assert not list(settings.work_dir.rglob("*.dcm")), "retrieved patient data left on disk"
    faults = [
        r for r in standin.server.app.request_log if r[1] == "/data/services/import" and r[2] >= 500
    ]
    unavailable = [a for a in rows if a["reason_category"] == "xnat_unavailable"]
    assert len(unavailable) >= len(faults), (faults, unavailable)
    return {"register": register, "attempts": rows, "in_xnat": in_xnat}
