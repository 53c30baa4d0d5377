"""Benchmark: two `pacs2xnat load` processes against one, on one PostgreSQL warehouse, against
a latency-bound PACS.

    .venv/bin/python benchmarks/two_loaders/run.py            # 40 studies, 100 ms one way
    .venv/bin/python benchmarks/two_loaders/run.py --quick    # 12 studies, a few minutes

One real Orthanc holds a synthetic cohort (``benchmarks/load/bed.py``); every loader reaches it
through a proxy that adds ``--latency`` seconds each way (no bandwidth limit), so a C-GET pays
one round trip per instance. A template workspace on the DuckDB file runs the query once; for
each variant its raw schema is copied into a fresh PostgreSQL database (``warehouse copy``'s
code), and one or two loaders start at the same moment, each in its own copy of the project
(its own dbt target and work folder: two machines in real life), each `load --limit N` into
the variant's own XNAT project. ``max_associations`` is a cap for the whole team on PostgreSQL
(``load/claims.py``), so:

- **1 loader, cap C** (the baseline) against **2 loaders, cap C**: the same total cap;
- **1 loader, cap 2C** and **2 loaders, cap 2C**: the cap doubled.

Measured per variant: wall time from the loaders' start to the last one's exit (each loader
syncs XNAT and builds the manifest first: on PostgreSQL the second build waits for the first,
``dbt_lock``), and the loading span, first attempt's start to the last attempt's end
(``raw.ingest_attempts``). Checked: every study loaded exactly once, the proxy never saw more
associations open than the cap.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.load.bed import CLI, Bed, LatencyProxy, clean_env, start  # noqa: E402
from connectors.testbed.postgres import PostgresCluster  # noqa: E402
from connectors.warehouse.copy import copy_to_postgres  # noqa: E402
from connectors.warehouse.postgres import PostgresWarehouse  # noqa: E402
from connectors.warehouse.store import Warehouse  # noqa: E402


@dataclass
class Variant:
    name: str
    loaders: int
    cap: int
    wall: float = 0.0
    span: float = 0.0
    stagger: float = 0.0  # the second loader's first attempt, after the first loader's
    most_open: int = 0
    per_loader: str = ""
    ok: bool = False


def measure(v: Variant, bed: Bed, pg: PostgresCluster, studies: int, latency: float) -> None:
    db = f"bench_{v.loaders}l{v.cap}c_{int(time.time())}"
    pg.create_database(db)
    url = pg.url_for(db)
    template = Warehouse(bed.template / "warehouse" / "pacs2xnat.duckdb")
    copy_to_postgres(template, PostgresWarehouse(url), skip_run="")
    proxy = LatencyProxy(bed.pacs, latency)
    project = f"L{v.loaders}C{v.cap}"
    procs = []
    started = time.monotonic()
    try:
        for k in range(v.loaders):
            ws = bed.workspace(f"{project}-{k}")
            config = bed.config(
                ws, xnat_project=project, pacs_port=proxy.port, max_associations=v.cap, url=url
            )
            cmd = [*CLI, "--quiet", "--config", str(config), "load", "--limit", str(studies)]
            procs.append((start(cmd, ws, clean_env(), ws / "load.out"), ws))
        for proc, ws in procs:
            if proc.wait(timeout=3600) not in (0, 1):
                tail = (ws / "load.out").read_text(errors="replace")[-3000:]
                raise SystemExit(f"{v.name}: a loader exited {proc.returncode}:\n{tail}")
        v.wall = time.monotonic() - started
    finally:
        proxy.close()
    v.most_open = proxy.most_open
    con = PostgresWarehouse(url).open()
    try:
        rows = con.execute(
            "select run_id, study_instance_uid, outcome, started_at, finished_at "
            "from raw.ingest_attempts"
        ).fetchall()
    finally:
        con.close()
    loaded = Counter(r[1] for r in rows if r[2] == "loaded")
    firsts = sorted(min(r[3] for r in rows if r[0] == run) for run in {r[0] for r in rows})
    v.span = (max(r[4] for r in rows) - min(r[3] for r in rows)).total_seconds()
    v.stagger = (firsts[-1] - firsts[0]).total_seconds() if len(firsts) > 1 else 0.0
    v.per_loader = "/".join(str(n) for n in sorted(Counter(r[0] for r in rows).values()))
    v.ok = len(loaded) == studies and set(loaded.values()) == {1} and v.most_open <= v.cap
    if not v.ok:
        twice = sorted(uid for uid, n in loaded.items() if n > 1)
        print(
            f"{v.name}: {len(loaded)} of {studies} studies loaded, {len(twice)} more than once, "
            f"most associations open {v.most_open}",
            file=sys.stderr,
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--studies", type=int, default=40)
    ap.add_argument("--patients", type=int, default=60)
    ap.add_argument("--instances", type=int, default=6, help="at most, per series")
    ap.add_argument("--latency", type=float, default=0.1, help="seconds, one way")
    ap.add_argument("--cap", type=int, default=1, help="C: max_associations of the baseline")
    ap.add_argument("--quick", action="store_true", help="10 studies of 30 patients")
    args = ap.parse_args()
    if args.quick:
        args.studies, args.patients = 10, 30
    c = args.cap
    variants = [
        Variant(f"1 loader, cap {c} (baseline)", 1, c),
        Variant(f"2 loaders, cap {c} (same total)", 2, c),
        Variant(f"1 loader, cap {2 * c}", 1, 2 * c),
        Variant(f"2 loaders, cap {2 * c} (doubled)", 2, 2 * c),
    ]
    load_before = os.getloadavg()[0]
    projects = [f"L{v.loaders}C{v.cap}" for v in variants]
    with (
        tempfile.TemporaryDirectory(prefix="bench-2l-") as tmp,
        PostgresCluster() as pg,
        Bed(Path(tmp), args.patients, args.instances, projects) as bed,
    ):
        os.environ["PGPASSFILE"] = str(pg.pgpass)
        os.environ.pop("PGPASSWORD", None)
        for v in variants:
            measure(v, bed, pg, args.studies, args.latency)
            print(f"{v.name}: {v.wall:.1f} s wall, {v.span:.1f} s loading", file=sys.stderr)
    base = variants[0]
    print(
        f"\n{args.studies} studies (cohort of {args.patients}, <= {args.instances} instances a "
        f"series), latency {args.latency * 1000:.0f} ms each way; load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after; baseline: {base.name}\n"
    )
    print(
        "| variant | wall (s) | wall × baseline | loading span (s) | span × baseline | "
        "2nd loader's start (s) | attempts per loader | most associations open | ok |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|:-:|")
    for v in variants:
        print(
            f"| {v.name} | {v.wall:.1f} | {v.wall / base.wall:.2f} | {v.span:.1f} | "
            f"{v.span / base.span:.2f} | {v.stagger:.1f} | {v.per_loader} | {v.most_open} | "
            f"{'yes' if v.ok else 'NO'} |"
        )
    return 0 if all(v.ok for v in variants) else 1


if __name__ == "__main__":
    raise SystemExit(main())
