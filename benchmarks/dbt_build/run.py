"""Benchmark: `dbt build` wall time and peak memory against the number of PACS study rows, on
the DuckDB file and on PostgreSQL.

For each scale a fresh copy of the dbt project and a fresh warehouse are made; raw.pacs_studies,
raw.pacs_queries and raw.master_patients are filled in SQL (generate_series, deterministic: no
randomness, the same rows every run); then `dbt build` runs in a child process, whose wall time
and peak RSS (``os.wait4`` rusage of that child alone) are measured. The baseline, in the same
run, is the build of the empty warehouse: the fixed cost of dbt (parse, seeds, unit tests).
CPU time (user + sys of the child) is reported beside wall time because on a shared machine
wall time mostly measures the neighbours; growth and per-row figures use CPU time.

    .venv/bin/python benchmarks/dbt_build/run.py                 # 10k, 100k, 1M, both backends
    .venv/bin/python benchmarks/dbt_build/run.py --quick         # 10k only, a few minutes
    .venv/bin/python benchmarks/dbt_build/run.py --backends duckdb --scales 10000

PostgreSQL (``--backends postgres``, on by default): one Debian PostgreSQL for the whole run
(``connectors/testbed/postgres.py``, as the tests start it); each scale's raw rows are made in
the DuckDB file as above and copied into a fresh database with ``pacs2xnat warehouse copy``'s
code (``warehouse/copy.py``: COPY, then row counts and hashes checked), then ``dbt build
--target postgres`` runs. Its memory is the dbt child's peak RSS plus the server's peak PSS
(sampled every 0.2 s over the postmaster and its backends); its CPU adds the server's.

Rows: ~20 study rows per patient, 10 % of rows a second observation of a study (a later
query run), descriptions drawn from the synthetic cohort's (included, excluded and unknown),
a few placeholder dates, empty studies, missing NHS numbers and withdrawn patients.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.dbt_build.pgserver import ServerMeter  # noqa: E402
from connectors.testbed.cohort import HISTORY  # noqa: E402
from connectors.testbed.postgres import PostgresCluster  # noqa: E402
from connectors.warehouse.copy import copy_to_postgres  # noqa: E402
from connectors.warehouse.dbt import postgres_target_env  # noqa: E402
from connectors.warehouse.postgres import PostgresWarehouse  # noqa: E402
from connectors.warehouse.store import Warehouse  # noqa: E402

PROJECT_FILES = ("dbt_project.yml", "profiles.yml", "models", "seeds", "macros", "data-tests")
STUDIES_PER_PATIENT = 20


@dataclass
class Result:
    rows: int
    seconds: float
    peak_rss_mb: float
    ok: bool
    cpu_seconds: float = 0.0
    slowest: str = ""
    backend: str = "duckdb"
    server_mb: float = 0.0  # PostgreSQL: the server's peak PSS (in peak_rss_mb too)
    copy_seconds: float = 0.0  # PostgreSQL: the raw rows copied from the DuckDB file


def make_project(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name)
        elif src.is_file():
            shutil.copy2(src, dest / name)
    return dest


def fill(warehouse: Warehouse, rows: int) -> None:
    """``rows`` rows in raw.pacs_studies (and their queries and patients), in SQL."""
    if rows == 0:
        return
    descriptions = ", ".join("'" + d.replace("'", "''") + "'" for d, *_ in HISTORY)
    patients = max(1, rows // STUDIES_PER_PATIENT)
    unique = rows - rows // 10  # 10 % of rows observe a study a second time
    with warehouse.connect() as con:
        con.execute(
            f"""
            insert into raw.master_patients (run_id, loaded_at, source_file, source_sha256,
                source_row, mrn, nhs_number, status, patient_name, birth_date)
            select 'import-1', timestamp '2026-06-01 08:00', 'master.xlsx', repeat('0', 64),
                p + 2, 'RA' || lpad(p::varchar, 7, '0'),
                case when p % 97 = 0 then null
                     else lpad((900000000 + p)::varchar, 9, '0')
                          || ((11 - ((900000000 + p)::varchar).split('')
                               .list_transform(lambda d, i: d::int * (11 - i))
                               .list_sum() % 11) % 11 % 10)::varchar
                end,
                case when p % 211 = 0 then 'withdrawn' else 'active' end,
                'Smith, John', date '1950-01-01' + (p % 10000)::int
            from generate_series(0, {patients - 1}) as t (p)
            """
        )
        con.execute(
            f"""
            insert into raw.pacs_queries (run_id, loaded_at, query_id, mrn, started_at,
                finished_at, outcome, studies_found, sub_queries)
            select r, timestamp '2026-06-01 09:00', r || '-' || p, 'RA' || lpad(p::varchar, 7, '0'),
                timestamp '2026-06-01 09:00', timestamp '2026-06-01 09:00', 'success',
                {STUDIES_PER_PATIENT}, 1
            from generate_series(0, {patients - 1}) as t (p), (values ('q1'), ('q2')) as r (r)
            """
        )
        con.execute(
            f"""
            insert into raw.pacs_studies (run_id, loaded_at, query_id, queried_at, query_mrn,
                accession_number, patient_id, study_date, study_time, study_description,
                study_instance_uid, modalities_in_study, number_of_study_related_instances,
                patient_name, patient_birth_date)
            select
                case when i < {unique} then 'q1' else 'q2' end as run_id,
                timestamp '2026-06-01 09:00' + to_days(case when i < {unique} then 0 else 90 end),
                (case when i < {unique} then 'q1' else 'q2' end) || '-' || (s % {patients}),
                timestamp '2026-06-01 09:00' + to_days(case when i < {unique} then 0 else 90 end),
                'RA' || lpad((s % {patients})::varchar, 7, '0'),
                'RJ' || lpad(s::varchar, 9, '0'),
                'RA' || lpad((s % {patients})::varchar, 7, '0'),
                case when s % 503 = 0 then '19000101'
                     else strftime(date '2015-01-01' + (s * 7 % 4000)::int, '%Y%m%d') end,
                '101500',
                ([{descriptions}])[1 + s % {len(HISTORY)}],
                '1.2.826.0.1.3680043.10.1234.88.' || s,
                case when s % 3 = 0 then 'CT\\PT' else 'CT' end,
                case when s % 401 = 0 then '0' else (1 + s % 40)::varchar end,
                'SMITH^JOHN',
                strftime(date '1950-01-01' + ((s % {patients}) % 10000)::int, '%Y%m%d')
            from (
                select i, case when i < {unique} then i else (i - {unique}) * 9 end as s
                from generate_series(0, {rows - 1}) as t (i)
            )
            """
        )


def run_build(
    project: Path, warehouse: Path, pg_url: str = "", meter: ServerMeter | None = None
) -> tuple[float, float, float, bool]:
    """``dbt build`` in a child process: (wall s, CPU s, peak RSS MB, success). CPU and memory
    are that child's (``os.wait4``), plus the PostgreSQL server's when ``meter`` is given."""
    env = {
        **os.environ,
        "PACS2XNAT_WAREHOUSE": str(warehouse),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    dbt = Path(sys.executable).with_name("dbt")
    cmd = [
        str(dbt),
        "--quiet",
        "build",
        "--project-dir",
        str(project),
        "--profiles-dir",
        str(project),
    ]
    if pg_url:
        cmd += ["--target", "postgres"]
        env.update(postgres_target_env(pg_url))
    if meter is not None:
        meter.begin()
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    server_cpu, server_mb = meter.end() if meter is not None else (0.0, 0.0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.stderr.write(output.decode("utf-8", "replace")[-4000:])
    cpu = usage.ru_utime + usage.ru_stime + server_cpu
    return seconds, cpu, usage.ru_maxrss / 1024 + server_mb, proc.returncode == 0


def measure(rows: int, tmp: Path, pg: PostgresCluster | None = None) -> list[Result]:
    """One build per backend on the same raw rows: DuckDB, then (``pg``) PostgreSQL."""
    project = make_project(tmp / f"p{rows}")
    warehouse = Warehouse(project / "warehouse" / "pacs2xnat.duckdb")
    warehouse.ensure()
    fill(warehouse, rows)
    results: list[Result] = []
    copy_seconds, pg_url = 0.0, ""
    if pg is not None:  # copied before DuckDB's build: only the raw schema travels
        name = f"bench_{tmp.name.replace('-', '_')}_{rows}"
        pg.create_database(name)
        pg_url = pg.url_for(name)
        started = time.perf_counter()
        copy_to_postgres(warehouse, PostgresWarehouse(pg_url), skip_run="")
        copy_seconds = time.perf_counter() - started
    seconds, cpu, rss, ok = run_build(project, warehouse.path)
    slowest = slowest_nodes(project / "target" / "run_results.json")
    results.append(Result(rows, seconds, rss, ok, cpu, slowest))
    if pg is not None:
        meter = ServerMeter(pg.data_dir)
        seconds, cpu, rss, ok = run_build(project, warehouse.path, pg_url, meter)
        slowest = slowest_nodes(project / "target" / "run_results.json")
        results.append(
            Result(rows, seconds, rss, ok, cpu, slowest, "postgres", meter.peak_mb, copy_seconds)
        )
    shutil.rmtree(project, ignore_errors=True)
    return results


def slowest_nodes(run_results: Path, n: int = 4) -> str:
    """The n slowest nodes of the build, from dbt's run_results.json."""
    if not run_results.is_file():
        return ""
    results = json.loads(run_results.read_text(encoding="utf-8")).get("results", [])
    results.sort(key=lambda r: r.get("execution_time", 0), reverse=True)
    return ", ".join(
        f"{r['unique_id'].split('.')[-1]} {r['execution_time']:.1f}s" for r in results[:n]
    )


def table(results: list[Result]) -> str:
    base = results[0]
    lines = [
        "| PACS study rows | wall (s) | × baseline | CPU (s) | CPU × baseline | net CPU µs/row | "
        "CPU growth vs previous | peak RSS (MB) | RSS × baseline | ok |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|:-:|",
    ]
    prev: Result | None = None
    for r in results:
        net = max(r.cpu_seconds - base.cpu_seconds, 0.0)
        per_row = f"{net / r.rows * 1e6:.1f}" if r.rows else "–"
        growth = (
            f"{r.cpu_seconds / prev.cpu_seconds:.2f}× for {r.rows / prev.rows:.0f}× rows"
            if prev and prev.rows
            else "–"
        )
        label = "0 (baseline: empty)" if r.rows == 0 else f"{r.rows:,}"
        lines.append(
            f"| {label} | {r.seconds:.1f} | {r.seconds / base.seconds:.2f} | {r.cpu_seconds:.1f} | "
            f"{r.cpu_seconds / base.cpu_seconds:.2f} | {per_row} | {growth} | "
            f"{r.peak_rss_mb:.0f} | {r.peak_rss_mb / base.peak_rss_mb:.2f} | "
            f"{'yes' if r.ok else 'NO'} |"
        )
        prev = r
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scales", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--repeat", type=int, default=1, help="builds per scale; the fastest counts")
    ap.add_argument(
        "--backends", nargs="+", choices=("duckdb", "postgres"), default=["duckdb", "postgres"]
    )
    ap.add_argument("--quick", action="store_true", help="10k rows only, one build each")
    args = ap.parse_args()
    if args.quick:
        args.scales, args.repeat = [10_000], 1
    load_before = os.getloadavg()
    results: dict[str, list[Result]] = {b: [] for b in args.backends}
    with tempfile.TemporaryDirectory(prefix="bench-dbt-") as tmp, _cluster(args.backends) as pg:
        measure(0, Path(tmp) / "warm-up", pg)  # imports and page cache warm, not counted
        for rows in [0, *args.scales]:
            runs = [measure(rows, Path(tmp) / f"r{k}", pg) for k in range(args.repeat)]
            for backend in results:
                mine = [x for run in runs for x in run if x.backend == backend]
                r = min(mine, key=lambda x: x.cpu_seconds)
                r.ok = all(x.ok for x in mine)
                print(
                    f"{backend:>8} {rows:>9,} rows: {r.seconds:6.1f} s wall, "
                    f"{r.cpu_seconds:6.1f} s CPU, {r.peak_rss_mb:6.0f} MB "
                    f"(load average {os.getloadavg()[0]:.1f})",
                    file=sys.stderr,
                )
                results[backend].append(r)
    load_after = os.getloadavg()
    for backend, rs in results.items():
        print(f"### {backend} (baseline: its own build of the empty warehouse)\n")
        print(table(rs))
        print()
    if "postgres" in results and "duckdb" in results:
        print("### PostgreSQL against DuckDB at the same scale (baseline: DuckDB)\n")
        print(versus(results["duckdb"], results["postgres"]))
        print()
    for rs in results.values():
        for r in rs:
            print(f"- {r.backend} {r.rows:,} rows, slowest nodes: {r.slowest}")
    print(
        f"\nload average (1 min) before {load_before[0]:.1f}, after {load_after[0]:.1f}; "
        f"{os.cpu_count()} CPUs"
    )
    ok = all(r.ok for rs in results.values() for r in rs)
    return 0 if ok else 1


@contextlib.contextmanager
def _cluster(backends: list[str]) -> Iterator[PostgresCluster | None]:
    """One PostgreSQL server for the run when it is measured; ``$PGPASSFILE`` names its
    owner-only pgpass file for the children (no password in argv or the environment)."""
    if "postgres" not in backends:
        yield None
        return
    with PostgresCluster() as pg:
        os.environ["PGPASSFILE"] = str(pg.pgpass)
        os.environ.pop("PGPASSWORD", None)
        yield pg


def versus(duck: list[Result], pg: list[Result]) -> str:
    lines = [
        "| PACS study rows | DuckDB wall (s) | PostgreSQL wall (s) | wall × DuckDB | "
        "CPU × DuckDB | peak MB DuckDB | peak MB PostgreSQL (server) | memory × DuckDB | "
        "copy into PostgreSQL (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for d, p in zip(duck, pg, strict=True):
        label = "0 (empty)" if d.rows == 0 else f"{d.rows:,}"
        lines.append(
            f"| {label} | {d.seconds:.1f} | {p.seconds:.1f} | {p.seconds / d.seconds:.2f} | "
            f"{p.cpu_seconds / d.cpu_seconds:.2f} | {d.peak_rss_mb:.0f} | "
            f"{p.peak_rss_mb:.0f} ({p.server_mb:.0f}) | {p.peak_rss_mb / d.peak_rss_mb:.2f} | "
            f"{p.copy_seconds:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
