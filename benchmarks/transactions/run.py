"""Benchmark: the warehouse's short transactions, attached to one in-memory DuckDB instance per
process (``warehouse/attached.py``, what ``Warehouse.connect`` does) against the baseline of a
``duckdb.connect`` and ``close`` for each (what it did before), in one run, interleaved.

    .venv/bin/python benchmarks/transactions/run.py          # 60 commits x 170 rows, 3 rounds
    .venv/bin/python benchmarks/transactions/run.py --commits 200 --rows 10 --rounds 5

Each commit is ``Warehouse.append_many`` of ``--rows`` synthetic ``raw.pacs_studies`` rows (the
query writer's pattern: a batch of patients' answers), ``--pause`` seconds apart; the
baseline swaps the seam's ``open_file`` for a plain ``duckdb.connect``. Each variant runs in
its own child process on its own fresh warehouse (so neither inherits the other's instance);
figures are that process's CPU and wall time for the commits alone (pauses not counted).
Everything is synthetic, in a temporary folder removed at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def child(variant: str, folder: Path, commits: int, rows: int, pause: float) -> dict[str, float]:
    import duckdb

    from connectors.warehouse import store
    from connectors.warehouse.schema import RAW_TABLES
    from connectors.warehouse.store import Warehouse

    if variant == "connect":

        def plain(path: Path, read_only: bool):  # type: ignore[no-untyped-def]
            con = duckdb.connect(str(path), read_only=read_only)
            return con, con.close

        store.open_file = plain  # type: ignore[assignment]
    wh = Warehouse(folder / "warehouse.duckdb")
    wh.ensure()
    table = RAW_TABLES["pacs_studies"]

    def value(kind: str, i: int) -> object:
        if "varchar" in kind:
            return f"v{i}"
        if "timestamp" in kind:
            return dt.datetime(2026, 1, 1)
        if "date" in kind:
            return dt.date(2026, 1, 1)
        return i if "int" in kind else None

    batch = [{name: value(kind, i) for name, kind in table.columns} for i in range(rows)]
    wall = cpu = 0.0
    for _ in range(commits):
        w, c = time.perf_counter(), time.process_time()
        wh.append_many({"pacs_studies": batch})
        wall += time.perf_counter() - w
        cpu += time.process_time() - c
        time.sleep(pause)
    return {"wall": wall, "cpu": cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commits", type=int, default=60)
    ap.add_argument("--rows", type=int, default=170)
    ap.add_argument("--pause", type=float, default=0.05)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        variant, folder = args.child.split(":", 1)
        print(json.dumps(child(variant, Path(folder), args.commits, args.rows, args.pause)))
        return
    best: dict[str, dict[str, float]] = {}
    root = Path(tempfile.mkdtemp(prefix="bench-transactions-"))
    try:
        for n in range(args.rounds):
            order = ["connect", "attach"] if n % 2 == 0 else ["attach", "connect"]
            for variant in order:
                folder = root / f"{variant}-{n}"
                folder.mkdir()
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        f"{variant}:{folder}",
                        "--commits",
                        str(args.commits),
                        "--rows",
                        str(args.rows),
                        "--pause",
                        str(args.pause),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                    cwd=ROOT,
                )
                got = json.loads(out.stdout)
                print(
                    f"  round {n + 1} {variant}: {got['wall']:.2f} s wall, {got['cpu']:.2f} s CPU"
                )
                if variant not in best or got["cpu"] < best[variant]["cpu"]:
                    best[variant] = got
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n{args.commits} commits x {args.rows} raw.pacs_studies rows, best of {args.rounds}")
    print(f"{'variant':<40} {'wall s':>7} {'CPU s':>7} {'ms CPU/commit':>14} {'x baseline':>11}")
    base = best["connect"]["cpu"]
    for variant, label in (
        ("connect", "duckdb.connect per transaction (baseline)"),
        ("attach", "attached to one instance (ours)"),
    ):
        b = best[variant]
        print(
            f"{label:<40} {b['wall']:7.2f} {b['cpu']:7.2f} {b['cpu'] / args.commits * 1000:14.1f}"
            f" {base / b['cpu']:10.2f}x"
        )


if __name__ == "__main__":
    main()
