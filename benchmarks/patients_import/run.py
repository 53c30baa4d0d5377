"""Benchmark: `pacs2xnat patients import` on damaged master lists of 1k, 10k and 100k patients.

For each size and format (.xlsx, .csv) it runs three things, each in its own fresh process, and
reports wall time and peak RSS (``os.wait4``):

* ``baseline`` - the floor: openpyxl's read-only iteration over every cell (or ``csv.reader``),
  doing nothing with them;
* ``parse``    - ``read_master_list``: detect, read, find the header, repair every row;
* ``import``   - the whole CLI command in a fresh workspace: run record, parse, one append to
  ``raw.master_patients`` in DuckDB.

Ratios are against the baseline of the same size and format, measured in the same run.

    .venv/bin/python benchmarks/patients_import/run.py            # 1k, 10k, 100k
    .venv/bin/python benchmarks/patients_import/run.py 1000 10000 # chosen sizes
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from connectors.testbed.cohort import Cohort, make_cohort  # noqa: E402
from connectors.testbed.workbooks import write_master_list  # noqa: E402

SIZES = [1_000, 10_000, 100_000]

BASELINE = """
import csv, sys
path = sys.argv[1]
if path.endswith('.csv'):
    with open(path, encoding='utf-8-sig', newline='') as f:
        n = sum(1 for _ in csv.reader(f))
else:
    from openpyxl import load_workbook
    wb = load_workbook(path, read_only=True)
    n = sum(1 for ws in wb.worksheets for row in ws.iter_rows() for c in row)
    wb.close()
"""
PARSE = """
import sys
from pathlib import Path
from connectors.admin.master_list import read_master_list
m = read_master_list(Path(sys.argv[1]), mrn_width=8)
assert m.rows
"""
IMPORT = """
import sys
from connectors.app.cli import app
sys.argv = ['pacs2xnat', '--quiet', 'patients', 'import', sys.argv[1]]
app()
"""


def cohort_of(n: int) -> Cohort:
    """n synthetic patients: the 40-patient cohort's people, repeated under new MRNs."""
    base = make_cohort(40, seed=7, as_of=dt.date(2026, 11, 1))
    patients = []
    for i in range(n):
        p = base.patients[i % len(base.patients)]
        mrn = f"{i:08d}" if i % 5 == 0 else f"RA{i:07d}"
        patients.append(replace(p, mrn=mrn))
    return Cohort(seed=7, patients=patients)


PEAK = """
import atexit, os
def _peak():
    with open("/proc/self/status") as f:
        kb = next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:"))
    with open(os.environ["BENCH_PEAK_FILE"], "w") as f:
        f.write(str(kb))
atexit.register(_peak)
"""


def measure(code: str, arg: Path, cwd: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of ``python -c code arg`` run in ``cwd``.

    Peak RSS is the child's own ``VmHWM`` read at exit (``ru_maxrss`` of a forked child also
    counts the parent's pages from before the exec, which would hide what the step costs).
    """
    peak_file = cwd / "peak.kb"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_PEAK_FILE": str(peak_file)}
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", PEAK + code, str(arg)], cwd=cwd, env=env)
    elapsed = time.perf_counter() - start
    if res.returncode != 0:
        raise SystemExit(f"benchmark step failed ({res.returncode}) on {arg}")
    return elapsed, int(peak_file.read_text()) / 1024


def main(sizes: list[int]) -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-patients-") as tmp:
        for n in sizes:
            cohort = cohort_of(n)
            for fmt in ("xlsx", "csv"):
                work = Path(tmp) / f"{n}-{fmt}"
                work.mkdir()
                path = write_master_list(cohort, work / f"master.{fmt}", damage=True)
                (work / "pacs2xnat.toml").write_text(
                    '[warehouse]\npath = "warehouse/p.duckdb"\n[patients]\nmrn_width = 8\n'
                )
                base = measure(BASELINE, path, work)
                parse = measure(PARSE, path, work)
                full = measure(IMPORT, path, work)
                size_mb = path.stat().st_size / 2**20
                rows.append((n, fmt, size_mb, base, parse, full))
                print(f"done {n} {fmt}", file=sys.stderr, flush=True)
    head = (
        f"{'patients':>9} {'fmt':>4} {'MiB':>6} | {'baseline s':>10} {'parse s':>8} "
        f"{'import s':>8} {'parse/base':>10} {'import/base':>11} | {'base MiB':>8} "
        f"{'parse MiB':>9} {'import MiB':>10} | {'µs/row import':>13}"
    )
    print(head)
    print("-" * len(head))
    for n, fmt, size_mb, (bt, bm), (pt, pm), (it, im) in rows:
        print(
            f"{n:>9} {fmt:>4} {size_mb:>6.2f} | {bt:>10.2f} {pt:>8.2f} {it:>8.2f} "
            f"{pt / bt:>10.2f} {it / bt:>11.2f} | {bm:>8.0f} {pm:>9.0f} {im:>10.0f} | "
            f"{it / n * 1e6:>13.0f}"
        )
    by = {(n, f): r for n, f, *_, r in [(r[0], r[1], r[5]) for r in rows]}
    for fmt in ("xlsx", "csv"):
        prev = None
        for n in sizes:
            t = by[(n, fmt)][0]
            if prev:
                print(f"{fmt}: {prev[0]} -> {n} patients: import time x{t / prev[1]:.1f}")
            prev = (n, t)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or SIZES)
