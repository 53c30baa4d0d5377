"""It runs the README's first command on a fresh copy of the repository, then checks that what
the demo left agrees with the synthetic cohort it made."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import duckdb
import pytest

from connectors import PROJECT_ROOT
from connectors.testbed.cohort import make_cohort

pytestmark = pytest.mark.slow  # end to end: tests/project/test_markers.py

README_FIRST = "scripts/setup && .venv/bin/pacs2xnat demo"
PATIENTS, SEED = 12, 11


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A clean copy of the tracked files, set up and run as a newcomer would."""
    clone = tmp_path_factory.mktemp("clone") / "pacs2xnat"
    files = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        src = PROJECT_ROOT / name
        if src.is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, clone / name)
    keep = clone / "demo-workspace"
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert README_FIRST in readme
    # The README's first command, with options: a small cohort, the workspace kept, --json.
    command = (
        "scripts/setup && .venv/bin/pacs2xnat --json demo "
        f"--patients {PATIENTS} --seed {SEED} --keep {keep}"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PACS2XNAT", "XNAT_"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    res = subprocess.run(
        ["bash", "-c", command], cwd=clone, capture_output=True, text=True, env=env, timeout=900
    )
    assert res.returncode in (0, 1), res.stderr[-4000:]
    summary = json.loads(res.stdout)
    return {"clone": clone, "keep": keep, "summary": summary, "stderr": res.stderr}


def _db(demo_run: dict[str, Any]) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(
        str(demo_run["keep"] / "project" / "warehouse" / "pacs2xnat.duckdb"), read_only=True
    )


def test_it_prints_what_to_open(demo_run: dict[str, Any]) -> None:
    outputs = demo_run["summary"]["outputs"]
    assert any(p.endswith("data_availability.html") for p in outputs.values())
    assert any(p.endswith("data_availability.xlsx") for p in outputs.values())
    for path in outputs.values():
        assert Path(path).is_file()
        assert oct(Path(path).stat().st_mode & 0o777) == "0o600"


def test_every_selected_linked_study_is_in_xnat_exactly_once(demo_run: dict[str, Any]) -> None:
    with _db(demo_run) as con:
        selected = {
            r[0]
            for r in con.execute(
                "select study_instance_uid from main.pacs_study_selection "
                "where selection_status = 'selected'"
            ).fetchall()
        }
        sessions = con.execute(
            "select study_instance_uid, count(*) from intermediate.int_xnat_sessions__current "
            "group by 1"
        ).fetchall()
        dupes = con.execute(
            "select subject_label, session_label, count(*) from "
            "intermediate.int_xnat_sessions__current group by 1, 2 having count(*) > 1"
        ).fetchall()
        failed = {
            r[0]
            for r in con.execute(
                "select study_instance_uid from main.ingest_failures where is_open"
            ).fetchall()
        }
    in_xnat = {uid: n for uid, n in sessions}
    assert selected, "the demo selected nothing"
    assert dupes == []
    assert all(n == 1 for n in in_xnat.values())
    assert selected - failed <= set(in_xnat)


def test_unknown_descriptions_are_in_triage(demo_run: dict[str, Any]) -> None:
    cohort = _cohort(demo_run)
    undecided = {"ct neck chest recon", "mr pharynx dynamic"}  # on neither list in the demo
    in_cohort = {s.description.lower() for s in cohort.studies} & undecided
    with _db(demo_run) as con:
        triage = dict(
            con.execute(
                "select study_description_normalised, description_decision "
                "from main.description_triage"
            ).fetchall()
        )
    assert in_cohort
    assert {d: triage.get(d) for d in in_cohort} == dict.fromkeys(in_cohort, "unknown")
    assert "conflict" in triage.values()  # the demo's workbook puts one description on both


def test_unlinked_patients_are_in_the_linkage_report(demo_run: dict[str, Any]) -> None:
    cohort = _cohort(demo_run)
    no_nhs, invalid = cohort.patients[1].mrn, cohort.patients[2].mrn
    with _db(demo_run) as con:
        problems = con.execute("select problem, mrn from main.linkage_report").fetchall()
    assert ("no_nhs_number", no_nhs) in problems
    assert ("invalid_nhs_number", invalid) in problems


def test_second_cycle_asked_only_since_the_first(demo_run: dict[str, Any]) -> None:
    first = dt.date.fromisoformat(demo_run["summary"]["first_cycle"])
    with _db(demo_run) as con:
        runs = [
            r[0]
            for r in con.execute(
                "select distinct run_id from raw.pacs_queries order by 1"
            ).fetchall()
        ]
        assert len(runs) == 2
        windows = con.execute(
            "select window_from, window_to from raw.pacs_queries where run_id = ? "
            "and outcome = 'success'",
            [runs[1]],
        ).fetchall()
    assert windows
    assert {w[0] for w in windows} == {first - dt.timedelta(days=14)}
    assert {w[1] for w in windows} == {dt.date.today()}


def _cohort(demo_run: dict[str, Any]) -> Any:
    first = dt.date.fromisoformat(demo_run["summary"]["first_cycle"])
    return make_cohort(PATIENTS, SEED, as_of=first)


def test_demo_serve_answers_findscu_and_the_xnat_client(tmp_path: Path) -> None:
    """It prints one JSON line once both servers answer; dcmtk's findscu and xnatpy use them."""
    import select
    import signal
    import sys

    import xnat

    from tests.support.real_parts import require_binary

    findscu = require_binary("findscu", "dcmtk")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "connectors.app.cli",
            "demo",
            "--patients",
            "4",
            "--seed",
            "3",
            "serve",
            "--json",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready, "demo serve printed nothing in 120 s"
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert set(info) == {"pacs", "xnat"}
        assert set(info["pacs"]) == {"host", "port", "aet"}
        assert set(info["xnat"]) == {"url", "user", "password", "project"}
        pacs = info["pacs"]
        found = subprocess.run(
            [
                findscu,
                "-S",
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                "StudyInstanceUID",
                "-aec",
                pacs["aet"],
                pacs["host"],
                str(pacs["port"]),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert found.returncode == 0, found.stderr
        assert "(0020,000d)" in (found.stdout + found.stderr)
        x = info["xnat"]
        with xnat.connect(x["url"], user=x["user"], password=x["password"]) as session:
            assert x["project"] in session.projects
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0
