"""Benchmark `pacs2xnat report` at 5,000 patients x 40 studies (200,000 studies in XNAT).

Reproducible: the raw tables are generated in SQL from the patient and study numbers alone.
One `dbt build` (no tests) of the report's marts and their parents (timed, not compared), then
each step in its own process, so peak RSS (VmHWM) is the step's own:

  baseline   select * from the three marts the workbook shows + the sessions mart, and write
             them as CSV with Python's csv module (the least a report can do)
  report     `pacs2xnat report --out DIR` (the workbook and the HTML page)

and the page in headless Chromium (network off): navigate -> load event (the page's script
runs before it, so this includes drawing every chart and the first table page), against a
trivial page as baseline, median of several loads; plus one filter keystroke.

    .venv/bin/python benchmarks/report/bench_report.py                # 5000 x 40
    .venv/bin/python benchmarks/report/bench_report.py --patients 500 # smaller
    .venv/bin/python benchmarks/report/bench_report.py --screenshot docs/data_availability.png
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from connectors.testbed.cohort import nhs_check_digit  # noqa: E402
from connectors.warehouse.dbt import copy_project, run_dbt  # noqa: E402
from connectors.warehouse.store import Warehouse  # noqa: E402
from tests.support.chromium_cdp import Chromium  # noqa: E402

MODALITIES = ["CT", "MR", "PT", "CT", "RTSTRUCT", "CT", "MR", "US"]
REASONS = ["retrieve_incomplete", "rejected_by_xnat", "timeout", "not_found_on_pacs"]
MARTS = ("data_availability", "data_availability_summary", "reconciliation",
         "data_availability_sessions")  # fmt: skip


def nhs_numbers(n: int) -> list[str]:
    out, k = [], 0
    while len(out) < n:
        first9 = f"{400000000 + k * 7919 % 599999999:09d}"
        k += 1
        cd = nhs_check_digit(first9)
        if cd is not None:
            out.append(first9 + str(cd))
    return out


def fill(wh: Warehouse, patients: int, per_patient: int) -> None:
    ts = dt.datetime(2026, 10, 1, 9)
    with open(ROOT / "seeds" / "study_description_rules.csv", newline="") as f:
        includes = [r["description"] for r in csv.DictReader(f) if r["decision"] == "include"]
    wh.append(
        "master_patients",
        [
            {
                "run_id": "import-1", "loaded_at": ts, "source_file": "master.xlsx",
                "source_sha256": "0" * 64, "source_row": i + 1, "mrn": f"MRN{i:07d}",
                "nhs_number": nhs, "status": "active",
                "reference_date": dt.date(2016, 1, 1) + dt.timedelta(days=(i * 97) % 2000),
            }
            for i, nhs in enumerate(nhs_numbers(patients), start=1)
        ],
    )  # fmt: skip
    with wh.connect() as con:
        con.execute("create temp table d as select unnest(?) as description", [includes])
        con.execute(
            """
            create temp table s as
            select
                m.mrn, m.nhs_number, m.reference_date, p, k,
                'ACC' || p || '-' || k as accession,
                '1.2.826.0.1.3680043.10.9999.' || p || '.' || k as uid,
                m.reference_date + cast(k * 35 - 420 + p % 29 as integer) as study_date,
                (?)[1 + (p + k) % len(?)] as modality,
                (?)[1 + (p * 3 + k) % len(?)] as description
            from range(1, ? + 1) t(p)
            inner join raw.master_patients m on m.source_row = p
            cross join range(1, ? + 1) u(k)
            """,
            [MODALITIES, MODALITIES, includes, includes, patients, per_patient],
        )
        con.execute(
            """
            insert into raw.pacs_queries (run_id, loaded_at, query_id, mrn, started_at,
                finished_at, outcome, studies_found, sub_queries)
            select 'query-1', ?, 'q-' || mrn, mrn, ?, ?, 'success', ?, 1
            from raw.master_patients
            """,
            [ts, ts, ts, per_patient],
        )
        con.execute(
            """
            insert into raw.pacs_studies (run_id, loaded_at, query_id, queried_at, query_mrn,
                accession_number, patient_id, study_date, study_time, study_description,
                study_instance_uid, modalities_in_study, number_of_study_related_instances)
            select 'query-1', ?, 'q-' || mrn, ?, mrn, accession, mrn,
                strftime(study_date, '%Y%m%d'), '101500', description, uid, modality, '120'
            from s
            """,
            [ts, ts],
        )
        # 90% of studies are in XNAT; 1 in 200 sessions was loaded by someone else
        con.execute(
            """
            insert into raw.xnat_sessions (run_id, loaded_at, synced_at, project, subject_id,
                subject_label, session_id, session_label, xsi_type, modality, session_date,
                study_instance_uid, scan_count, insert_date)
            select 'sync-1', ?, ?, 'HNC', 'S' || p, nhs_number, 'E' || p || '_' || k,
                accession, 'xnat:' || lower(modality) || 'SessionData', modality,
                cast(study_date as varchar),
                case when k % 200 = 7 then '9.9.' || p || '.' || k else uid end,
                1 + k % 6, cast(? as varchar)
            from s where (p * 7 + k) % 10 <> 0
            """,
            [ts, ts, ts],
        )
        con.execute(
            """
            insert into raw.ingest_attempts (run_id, loaded_at, attempt_id, study_instance_uid,
                accession_number, nhs_number, mode, started_at, finished_at, outcome,
                reason_category)
            select 'load-1', ?, 'a-' || uid, uid, accession, nhs_number, 'direct', ?, ?,
                'failed', (?)[1 + k % 4]
            from s where (p * 7 + k) % 10 = 0 and k % 2 = 0
            """,
            [ts, ts, ts, REASONS],
        )
        con.execute(
            "insert into raw.runs (run_id, command, started_at, finished_at, outcome, "
            "exit_code, loaded_at) values ('sync-1', 'sync', ?, ?, 'success', 0, ?)",
            [ts, ts, ts],
        )


BASELINE = """
import csv, sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
for mart in sys.argv[3:]:
    cur = con.execute(f"select * from main.{mart}")
    with open(f"{sys.argv[2]}/{mart}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([d[0] for d in cur.description])
        w.writerows(cur.fetchall())
"""


# Each step runs under this wrapper, which writes the process's own peak RSS (VmHWM, reset by
# exec, unlike ru_maxrss, which would count this benchmark's memory at fork) at exit.
WRAPPER = """
import atexit, runpy, sys
def _peak():
    with open("/proc/self/status") as f:
        kb = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    with open(out, "w") as f:
        f.write(str(kb))
atexit.register(_peak)
out, mode, target, *rest = sys.argv[1:]
sys.argv = [target, *rest]
if mode == "module":
    runpy.run_module(target, run_name="__main__")
else:
    exec(compile(target, "<baseline>", "exec"), {"__name__": "__main__"})
"""


def timed(
    py: str, mode: str, target: str, args: list[str], cwd: Path
) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS MiB) of one child process. CPU time is the figure
    to compare on a shared machine: wall time grows with everyone else's load."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(
            [py, "-c", WRAPPER, rss.name, mode, target, *args],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            check=False,
        )
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise SystemExit(f"{target[:40]} exited {proc.returncode}")
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        return wall, cpu, int(Path(rss.name).read_text()) / 1024


def browser_load(path: Path, repeats: int, screenshot: Path | None) -> tuple[float, float, float]:
    trivial = path.parent / "trivial.html"
    trivial.write_text("<!DOCTYPE html><html><body><p>hello</p></body></html>")
    exe = shutil.which("chromium") or "/usr/bin/chromium"
    loads, base = [], []
    with Chromium(exe) as b:
        for _ in range(repeats):
            base.append(b.open(trivial.as_uri()))
            loads.append(b.open(path.as_uri()))
            if b.console_errors():
                raise SystemExit(f"console errors: {b.console_errors()}")
        start = time.perf_counter()
        b.eval("document.getElementById('filter').focus()")
        b.call("Input.insertText", session=True, text="MRN00001")
        b.eval("new Promise(r => setTimeout(r, 0))")
        b.eval("new Promise(r => requestAnimationFrame(() => r(1)))")
        filt = time.perf_counter() - start
        if screenshot is not None:
            b.open(path.as_uri())
            b.screenshot(screenshot, full_page=True)
    return statistics.median(base), statistics.median(loads), filt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=5000)
    ap.add_argument("--studies", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--screenshot", type=Path)
    args = ap.parse_args()
    py = str(ROOT / ".venv" / "bin" / "python")
    with tempfile.TemporaryDirectory(prefix="p2x-bench-report-") as tmp:
        project = copy_project(Path(tmp) / "project")
        (project / "pacs2xnat.toml").write_text('[warehouse]\npath = "warehouse/w.duckdb"\n')
        wh = Warehouse(project / "warehouse" / "w.duckdb")
        t0 = time.perf_counter()
        fill(wh, args.patients, args.studies)
        t_fill = time.perf_counter() - t0
        t0 = time.perf_counter()
        # only what the report reads (and its parents): the loader's ingest_manifest is not
        # the report's to benchmark (benchmarks/dbt_build is)
        res = run_dbt(
            [
                "build",
                "--select",
                *(f"+{m}" for m in MARTS),
                "--exclude-resource-type",
                "test",
                "unit_test",
            ],
            project_dir=project,
            warehouse_path=wh.path,
        )
        if not res.success:
            raise SystemExit(f"dbt build failed: {res.failures}")
        t_build = time.perf_counter() - t0
        with wh.connect(read_only=True) as con:
            sizes = {m: con.execute(f"select count(*) from main.{m}").fetchone()[0] for m in MARTS}
        base_dir = Path(tmp) / "csv"
        base_dir.mkdir()
        b_wall, b_cpu, b_rss = timed(
            py, "code", BASELINE, [str(wh.path), str(base_dir), *MARTS], project
        )
        out = Path(tmp) / "out"
        r_wall, r_cpu, r_rss = timed(
            py, "module", "connectors.app.cli", ["--quiet", "report", "--out", str(out)], project
        )
        html = out / "data_availability.html"
        xlsx = out / "data_availability.xlsx"
        csv_bytes = sum(p.stat().st_size for p in base_dir.iterdir())
        html_bytes, xlsx_bytes = html.stat().st_size, xlsx.stat().st_size
        l_base, l_page, t_filter = browser_load(html, args.repeats, args.screenshot)

    mib = 1024 * 1024
    print(f"\nreport benchmark: {args.patients} patients x {args.studies} studies "
          f"(fill {t_fill:.1f} s, dbt build {t_build:.1f} s)")  # fmt: skip
    print("mart rows: " + ", ".join(f"{k} {v:,}" for k, v in sizes.items()))
    print(f"\n{'step':<34}{'baseline':>12}{'measured':>12}{'ratio':>8}")
    rows = [
        ("wall time (s): csv vs report", b_wall, r_wall),
        ("CPU time (s): csv vs report", b_cpu, r_cpu),
        ("peak RSS (MiB): csv vs report", b_rss, r_rss),
        ("bytes (MiB): csv vs html", csv_bytes / mib, html_bytes / mib),
        ("bytes (MiB): csv vs xlsx", csv_bytes / mib, xlsx_bytes / mib),
        ("chromium load (s): trivial vs page", l_base, l_page),
    ]
    for name, base, got in rows:
        print(f"{name:<34}{base:>12.3f}{got:>12.3f}{got / base:>8.1f}")
    print(f"filter keystroke to repaint (s): {t_filter:.3f}")
    print(f"page opens in under 2 s: {'yes' if l_page < 2 else 'NO'} ({l_page:.2f} s)")


if __name__ == "__main__":
    main()
