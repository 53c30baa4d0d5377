"""Benchmark: the whole ``pacs2xnat query`` command against dcmtk ``findscu`` on the same
number of reused associations, in one run on the same Orthanc.

    .venv/bin/python benchmarks/query/command.py                     # 1,000 patients x 10 studies
    .venv/bin/python benchmarks/query/command.py --patients 10000 --studies 2
    .venv/bin/python benchmarks/query/command.py --assoc 1 2 --repeat 2

Orthanc (Debian, ``TCP_NODELAY=1``) holds P patients x S studies (headers only). A fresh
workspace imports the cohort's master list (``pacs2xnat patients import``); its warehouse is
kept aside, so every round starts from it (every patient due, the plan not yet built).

- **ours**: ``pacs2xnat --json --config … query`` in a child process with
  ``max_associations = K``: start-up, the plan's dbt build, the C-FINDs, every answer
  committed. Its summary's ``plan_seconds`` is dbt's share. Once per ``--backend``
  (``[pacs] query_backend``: pynetdicom, and dcmtk's findscu in batches).
- **findscu**: the same study-level identifiers (the plan's window per patient, all ten
  return keys) written as query files, split over K ``findscu`` processes each sending its
  share over one association, ``TCP_NODELAY=1``.

One untimed run first for one patient (``--mrn``: dbt's full parse); then the rounds are
interleaved (``--repeat``, the order of the trees alternating with ``--compare-with``) and the
best of each kept. Figures in README.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import duckdb  # noqa: E402
from bench import synthetic, write_headers  # type: ignore[import-not-found]  # noqa: E402
from pydicom.dataset import FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian  # noqa: E402

from connectors.pacs.find import Window, study_query  # noqa: E402
from connectors.testbed.orthanc import Orthanc  # noqa: E402
from connectors.testbed.workbooks import write_master_list  # noqa: E402
from connectors.warehouse.dbt import copy_project  # noqa: E402

CLI = [sys.executable, "-m", "connectors.app.cli"]
WAREHOUSE = Path("warehouse") / "pacs2xnat.duckdb"


def clean_env(tree: Path = ROOT, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PACS2XNAT", "XNAT_"))}
    env["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    env["PYTHONPATH"] = str(tree)
    env.update(extra)
    return env


def write_config(project: Path, orthanc: Orthanc, assoc: int, backend: str = "pynetdicom") -> Path:
    path = project / f"pacs2xnat-{assoc}-{backend}.toml"
    path.write_text(
        f'[pacs]\nhost = "{orthanc.host}"\nport = {orthanc.port}\ncalled_aet = "{orthanc.aet}"\n'
        f'calling_aet = "PACS2XNAT"\nmax_associations = {assoc}\nquery_backend = "{backend}"\n\n'
        '[xnat]\nurl = "http://127.0.0.1:9"\nproject = "BENCH"\n\n'
        f'[warehouse]\npath = "{WAREHOUSE}"\n',
        encoding="utf-8",
    )
    return path


def timed(cmd: list[str], *, env: dict[str, str], cwd: Path) -> tuple[float, float, str]:
    """Wall and CPU seconds (user + sys of the child) and its stdout."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - t
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{cmd[3:]} failed:\n{err.read()[-3000:]}")
        return wall, usage.ru_utime + usage.ru_stime, out.read()


#: ``--profile FILE``: where py-spy writes the raw (collapsed) stacks of each timed run of ours
PROFILE: list[str] = []
_PROFILED = itertools.count()


#: ``--after-build another-day``: the build runs 26 hours of time zones before every query
#: (UTC-12 against UTC+14: always another date, for Python and DuckDB alike)
BUILD_TZ, QUERY_TZ = "Etc/GMT+12", "Etc/GMT-14"


def ours(
    project: Path,
    pristine: Path,
    config: Path,
    tree: Path = ROOT,
    extra: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> tuple[float, float, dict[str, Any]]:
    """The whole command on a copy of the pristine warehouse (and of dbt's record of its last
    run, which says whether the warehouse's views are dbt's latest); ``tree``: whose code runs
    it; ``env``: added to its environment."""
    shutil.copy2(pristine, project / WAREHOUSE)
    if (results := pristine.with_suffix(".run_results.json")).exists():
        shutil.copy2(results, project / "target" / "run_results.json")
    wrap = []
    if PROFILE and not extra:
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        wrap = [spy, "record", "-r", "250", "-f", "raw", "-s",
                "-o", f"{PROFILE[0]}.{next(_PROFILED)}", "--"]  # fmt: skip
    wall, cpu, out = timed([*wrap, *CLI, "--json", "--config", str(config), "query", *extra],
                           env=clean_env(tree, **(env or {})), cwd=project)  # fmt: skip
    if wrap:  # py-spy's own lines around the summary
        summary, _end = json.JSONDecoder().raw_decode(out[out.index("{") :])
        return wall, cpu, summary
    return wall, cpu, json.loads(out)


def query_files(project: Path, folder: Path) -> list[Path]:
    """The identifiers ``pacs2xnat query`` sent (the plan's windows), as findscu query files."""
    with duckdb.connect(str(project / WAREHOUSE), read_only=True) as con:
        plan = con.execute(  # as ours asked them (the plan, a view, has moved on since)
            "select mrn, window_from from raw.pacs_queries order by mrn"
        ).fetchall()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (mrn, window_from) in enumerate(plan):
        ds = study_query(str(mrn), Window(window_from, None))
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"q{i:06d}.dcm"
        ds.save_as(path, enforce_file_format=False, implicit_vr=False, little_endian=True)
        paths.append(path)
    return paths


#: Queries per findscu process: Orthanc dropped findscu's association (broken pipe) ~30 queries
#: into a 5,000-file run; each of the K lanes then runs one findscu per chunk, one after another.
FINDSCU_CHUNK = 500


def findscu(orthanc: Orthanc, files: list[Path], assoc: int) -> tuple[float, float, int]:
    """K lanes at once, each sending its share of the queries on reused associations (one
    findscu process, so one association, per ``FINDSCU_CHUNK`` queries)."""
    env = clean_env(TCP_NODELAY="1")
    totals = [(0, 0.0)] * assoc

    def lane(k: int) -> None:
        mine = files[k::assoc]
        found, cpu = 0, 0.0
        for i in range(0, len(mine), FINDSCU_CHUNK):
            chunk = [str(f) for f in mine[i : i + FINDSCU_CHUNK]]
            cmd = ["findscu", "-v", "-S", "-aet", "PACS2XNAT", "-aec", orthanc.aet,
                   orthanc.host, str(orthanc.port), *chunk]  # fmt: skip
            p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            assert p.stderr is not None
            err = p.stderr.read()
            _, status, usage = os.wait4(p.pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                raise SystemExit(f"findscu failed:\n{err[-2000:].decode(errors='replace')}")
            found += err.count(b"(Pending)")
            cpu += usage.ru_utime + usage.ru_stime
        totals[k] = (found, cpu)

    t = time.monotonic()
    lanes = [threading.Thread(target=lane, args=(k,)) for k in range(assoc)]
    for th in lanes:
        th.start()
    for th in lanes:
        th.join()
    return time.monotonic() - t, sum(c for _, c in totals), sum(f for f, _ in totals)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--patients", type=int, default=1000)
    ap.add_argument("--studies", type=int, default=10)
    ap.add_argument("--assoc", type=int, nargs="+", default=[2])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument(
        "--compare-with",
        help="a checkout of another commit: its `pacs2xnat query` runs too, in the same rounds "
        "(rows named [folder]), to measure a change against what it changes",
    )
    ap.add_argument(
        "--backend",
        nargs="+",
        default=["pynetdicom", "dcmtk"],
        choices=["pynetdicom", "dcmtk"],
        help="[pacs] query_backend of our rows (default: both)",
    )
    ap.add_argument(
        "--after-build",
        nargs="?",
        const="today",
        choices=["today", "another-day"],
        help="`pacs2xnat build` before the master list's import: the plan's views exist and "
        "only raw rows changed since (a second import the same day, a query resumed after a "
        "window closed); `another-day`: that build on an earlier date (the last cycle's, "
        "three months before: the build in time zone UTC-12, every query in UTC+14); without "
        "it every round builds the plan (the first query on a new warehouse)",
    )
    ap.add_argument(
        "--python",
        help="the interpreter `pacs2xnat` runs on (default: this one), e.g. the .venv/bin/python "
        "of a clone set up by `scripts/setup` without --test, as a user installs it",
    )
    ap.add_argument(
        "--profile",
        help="py-spy (pip install py-spy) records each timed run of ours, subprocesses too, as "
        "raw stacks in FILE.0, FILE.1, ... (the wall figures then include its sampling)",
    )
    args = ap.parse_args()
    if args.python:
        CLI[0] = args.python
    if args.profile:
        PROFILE.append(str(Path(args.profile).resolve()))
    trees = []  # (row name, code tree, query_backend)
    for backend in args.backend:
        trees.append((f"pacs2xnat query ({backend})", ROOT, backend))
        if args.compare_with:
            other = Path(args.compare_with).resolve()
            trees.append((f"pacs2xnat query ({backend}) [{other.name}]", other, backend))
    with tempfile.TemporaryDirectory(prefix="bench-query-cmd-") as tmp:
        work = Path(tmp)
        cohort, studies = synthetic(args.patients, args.studies)
        files = write_headers(cohort, studies, work / "dicom")
        project = copy_project(work / "project")
        master = write_master_list(cohort, project / "inputs" / "master_patient_list.xlsx")
        with Orthanc(work / "orthanc") as orthanc:
            t = time.monotonic()
            orthanc.upload(files)
            print(f"Orthanc holds {len(files)} studies ({time.monotonic() - t:.0f} s)", flush=True)
            configs = {
                (k, b): write_config(project, orthanc, k, b)
                for k in args.assoc
                for b in args.backend
            }
            k0b0 = (args.assoc[0], args.backend[0])
            pristine = work / "pristine.duckdb"
            tz = {"TZ": QUERY_TZ} if args.after_build == "another-day" else {}
            if args.after_build:  # the models built earlier (today or not), before this import
                build_tz = {"TZ": BUILD_TZ} if tz else {}
                timed([*CLI, "--quiet", "--config", str(configs[k0b0]), "build"],
                      env=clean_env(**build_tz), cwd=project)  # fmt: skip
                shutil.copy2(project / "target" / "run_results.json",
                             pristine.with_suffix(".run_results.json"))  # fmt: skip
            timed([*CLI, "--quiet", "--config", str(configs[k0b0]), "patients", "import",
                   str(master)], env=clean_env(), cwd=project)  # fmt: skip
            shutil.copy2(project / WAREHOUSE, pristine)
            # one untimed run first: dbt's partial parse then serves every timed one that builds
            # (a build with other vars parses the whole project: several s more)
            first = ["--mrn", cohort.patients[0].mrn]  # the plan is built whole either way
            wall, _cpu, _summary = ours(project, pristine, configs[k0b0], ROOT, first, tz)
            print(f"  warm-up (dbt's full parse, if it builds): {wall:.2f} s", flush=True)
            queries: list[Path] = []
            best: dict[tuple[str, int], tuple[float, float, int, float]] = {}
            for round_ in range(args.repeat):
                for k in args.assoc:
                    for name, tree, backend in trees[:: 1 if round_ % 2 == 0 else -1]:
                        wall, cpu, summary = ours(
                            project, pristine, configs[k, backend], tree, env=tz
                        )
                        plan, found = summary.get("plan_seconds"), summary.get("studies_found")
                        print(f"  {name} K={k}: {wall:.2f} s (plan {plan} s, {found} studies)",
                              flush=True)  # fmt: skip
                        if not queries:
                            queries = query_files(project, work / "queries")
                        entry = (wall, cpu, int(summary["studies_found"]), summary["plan_seconds"])
                        if (name, k) not in best or wall < best[name, k][0]:
                            best[name, k] = entry
                    fwall, fcpu, found = findscu(orthanc, queries, k)
                    print(f"  findscu K={k}: {fwall:.2f} s ({found} studies)", flush=True)
                    if ("findscu", k) not in best or fwall < best["findscu", k][0]:
                        best["findscu", k] = (fwall, fcpu, found, 0.0)
    print(f"\n`pacs2xnat query` (whole command) vs findscu, {args.patients} patients × "
          f"{args.studies} studies, Orthanc 1.10, TCP_NODELAY=1, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"{'contender':44} {'assoc':>5} {'wall s':>7} {'CPU s':>6} {'studies':>8} "
          f"{'plan s':>6} {'vs findscu':>10}")  # fmt: skip
    for k in args.assoc:
        f = best["findscu", k]
        print(f"{'findscu, K processes':44} {k:5d} {f[0]:7.2f} {f[1]:6.1f} {f[2]:8d} {'':>6} "
              f"{'1.00×':>10}")  # fmt: skip
        for name, _tree, _backend in trees:
            o = best[name, k]
            print(f"{name:44} {k:5d} {o[0]:7.2f} {o[1]:6.1f} {o[2]:8d} {o[3]:6.2f} "
                  f"{f[0] / o[0]:9.2f}×")  # fmt: skip


if __name__ == "__main__":
    main()
