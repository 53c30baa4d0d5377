"""Benchmark: `pacs2xnat demo` and one `pacs2xnat run`, each against one full `dbt build` on the
same warehouse, in the same run.

    .venv/bin/python benchmarks/cycle/run.py                          # 40 patients
    .venv/bin/python benchmarks/cycle/run.py --patients 40 1000       # and 1,000
    .venv/bin/python benchmarks/cycle/run.py --only run --pacs embedded

For each cohort size (synthetic, `connectors/testbed/cohort.py`, seed 7):

- **demo** (per PACS kind: Orthanc when installed, and the embedded pynetdicom PACS, chosen
  with ``PACS2XNAT_DEMO_PACS``): `pacs2xnat --json demo --patients N --keep DIR` in a child
  process; then `dbt build` (everything: seeds, unit tests, models, data tests) on the warehouse
  the demo left.
- **run**: `pacs2xnat demo serve --patients N --json` serves the cohort (its own process: the
  servers' CPU is not the cycle's); a fresh workspace imports the demo's master list and rules
  workbook, then one `pacs2xnat run` (the new-patient cycle: query, build, export, load, sync,
  rebuild, report) runs in a child process; then `dbt build` on that warehouse.

Each child is measured alone with ``os.wait4``: wall time and CPU time (user + sys, its reaped
children included, e.g. Orthanc under the demo). The run summary's per-step ``seconds``
(``raw.runs``) split a cycle into its network work (query, load, sync: C-FIND, C-GET, uploads,
XNAT reads; the query step's own dbt build of its plan, ``plan_seconds``, is not network) and
the rest (builds, export, report and the process around them): the issue's
goal is overhead <= 1.5x one full `dbt build`, the demo <= 30 s with Orthanc, <= 45 s embedded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402

from connectors.testbed.cohort import make_cohort  # noqa: E402
from connectors.testbed.demo import DEMO_PACS_ENV, write_config  # noqa: E402
from connectors.testbed.orthanc import free_port, orthanc_binary  # noqa: E402
from connectors.testbed.workbooks import write_demo_workbooks  # noqa: E402
from connectors.warehouse.dbt import WAREHOUSE_ENV, copy_project  # noqa: E402

SEED = 7
NETWORK_STEPS = ("query", "load", "sync")
CLI = [sys.executable, "-m", "connectors.app.cli"]
DBT = str(Path(sys.executable).with_name("dbt"))


@dataclass
class Measured:
    wall: float
    cpu: float
    code: int
    stdout: str = ""
    stderr: str = ""


@dataclass
class Row:
    what: str
    patients: int
    pacs: str
    cycle: Measured
    dbt: Measured
    steps: list[dict[str, float]] = field(default_factory=list)  # one per `run` in the cycle
    notes: str = ""


def measure(cmd: list[str], *, env: dict[str, str], cwd: Path, timeout: float = 7200) -> Measured:
    """One child process: wall and CPU (user + sys of it and its reaped children)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=err, text=True)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
            time.sleep(0.05)
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Measured(
            wall, usage.ru_utime + usage.ru_stime, proc.returncode, out.read(), err.read()
        )


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PACS2XNAT", "XNAT_"))}
    env["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def dbt_build(project: Path) -> Measured:
    """The baseline: one full `dbt build` of the project on the warehouse it holds."""
    env = clean_env(**{WAREHOUSE_ENV: str(project / "warehouse" / "pacs2xnat.duckdb")})
    m = measure(
        [DBT, "--quiet", "build", "--project-dir", str(project), "--profiles-dir", str(project)],
        env=env,
        cwd=project,
    )
    if m.code != 0:
        raise SystemExit(f"dbt build failed ({m.code}):\n{m.stdout[-3000:]}{m.stderr[-3000:]}")
    return m


def run_steps(warehouse: Path) -> list[dict[str, float]]:
    """Each `pacs2xnat run`'s per-step seconds, oldest first, from raw.runs."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute(
            "select summary from raw.runs where command = 'run' order by started_at"
        ).fetchall()
    steps = []
    for (summary,) in rows:
        s = json.loads(summary or "{}").get("steps", {})
        seconds = {name: float(v.get("seconds", 0.0)) for name, v in s.items()}
        if "plan_seconds" in s.get("query", {}):  # the query step's dbt build of its plan
            seconds["query_plan"] = float(s["query"]["plan_seconds"])
        steps.append(seconds)
    return steps


def bench_demo(patients: int, pacs: str, work: Path) -> Row:
    keep = work / f"demo-{pacs}-{patients}"
    env = clean_env(**{DEMO_PACS_ENV: pacs})
    cmd = [*CLI, "--json", "demo", "--patients", str(patients), "--seed", str(SEED)]
    m = measure([*cmd, "--keep", str(keep)], env=env, cwd=work)
    if m.code not in (0, 1):
        raise SystemExit(f"demo exited {m.code}:\n{m.stderr[-4000:]}")
    summary = json.loads(m.stdout)
    project = keep / "project"
    steps = run_steps(project / "warehouse" / "pacs2xnat.duckdb")
    base = dbt_build(project)
    sel = summary.get("counts", {}).get("selection", {})
    return Row("demo", patients, pacs, m, base, steps, f"exit {summary.get('exit_codes')}; {sel}")


def bench_run(patients: int, pacs: str, work: Path) -> Row:
    """One new-patient `pacs2xnat run` against `demo serve`'s PACS and stand-in XNAT."""
    env = clean_env(**{DEMO_PACS_ENV: pacs})
    serve = subprocess.Popen(
        [*CLI, "demo", "serve", "--patients", str(patients), "--seed", str(SEED), "--json"],
        env=env,
        cwd=work,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert serve.stdout is not None
        line = serve.stdout.readline()
        if not line:
            raise SystemExit("demo serve did not start")
        servers = json.loads(line)
        project = copy_project(work / f"run-{pacs}-{patients}")
        config = write_config(project / "pacs2xnat.toml", servers, our_port=free_port())
        inputs = write_demo_workbooks(
            make_cohort(patients, SEED),
            project / "inputs",
            project / "seeds" / "study_description_rules.csv",
        )
        x = servers["xnat"]
        env = clean_env(XNAT_USER=x["user"], XNAT_PASS=x["password"])
        for args in (
            ["patients", "import", str(inputs["master_list"])],
            ["rules", "import", str(inputs["rules_workbook"]), "--decided-by", "bench"],
        ):
            pre = measure([*CLI, "--quiet", "--config", str(config), *args], env=env, cwd=project)
            if pre.code != 0:
                raise SystemExit(f"{' '.join(args)} exited {pre.code}:\n{pre.stderr[-3000:]}")
        m = measure([*CLI, "--quiet", "--config", str(config), "run"], env=env, cwd=project)
        if m.code not in (0, 1):
            raise SystemExit(f"run exited {m.code}:\n{m.stderr[-4000:]}")
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)
    steps = run_steps(project / "warehouse" / "pacs2xnat.duckdb")
    base = dbt_build(project)
    return Row("run", patients, pacs, m, base, steps, f"exit {m.code}")


def split(row: Row) -> tuple[float, float]:
    """(network seconds, overhead seconds) of the measured wall time."""
    network = sum(
        sum(s.get(k, 0.0) for k in NETWORK_STEPS) - s.get("query_plan", 0.0) for s in row.steps
    )
    return network, row.cycle.wall - network


def report(rows: list[Row]) -> str:
    lines = [
        "| what | patients | PACS | wall (s) | CPU (s) | dbt build wall / CPU (s) | "
        "wall × dbt | CPU × dbt | network (s) | overhead (s) | overhead × dbt wall |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        network, overhead = split(r)
        lines.append(
            f"| {r.what} | {r.patients:,} | {r.pacs} | {r.cycle.wall:.1f} | {r.cycle.cpu:.1f} | "
            f"{r.dbt.wall:.1f} / {r.dbt.cpu:.1f} | {r.cycle.wall / r.dbt.wall:.2f} | "
            f"{r.cycle.cpu / r.dbt.cpu:.2f} | {network:.1f} | {overhead:.1f} | "
            f"{overhead / r.dbt.wall:.2f} |"
        )
    lines.append("")
    lines.append("Per-step seconds of each `pacs2xnat run` (from its run summary):")
    for r in rows:
        for i, s in enumerate(r.steps, 1):
            text = ", ".join(f"{k} {v:.1f}" for k, v in s.items())
            lines.append(f"- {r.what} {r.patients:,} {r.pacs}, cycle {i}: {text}")
        lines.append(f"  ({r.notes})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, nargs="+", default=[40])
    parser.add_argument("--only", choices=("demo", "run"), default=None)
    kinds = ["orthanc", "embedded"] if orthanc_binary() else ["embedded"]
    parser.add_argument("--pacs", choices=("orthanc", "embedded"), nargs="+", default=kinds)
    parser.add_argument("--keep", type=Path, default=None, help="keep the workspaces here")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-cycle-"))
    work.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    try:
        load = os.getloadavg()
        print(f"load average before: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}", flush=True)
        for n in args.patients:
            for pacs in args.pacs:
                if args.only in (None, "demo"):
                    rows.append(bench_demo(n, pacs, work))
                    print(report(rows[-1:]), flush=True)
            if args.only in (None, "run"):
                rows.append(bench_run(n, args.pacs[0], work))
                print(report(rows[-1:]), flush=True)
        load = os.getloadavg()
        print(f"\nload average after: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}\n")
        print(report(rows))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
