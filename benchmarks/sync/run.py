"""Benchmark: ``pacs2xnat sync`` wall time, CPU and peak memory against the number of XNAT
sessions, with paging (XNAT 1.8.9+) and without (1.8.0-1.8.8: one answer holds the list).

The stand-in XNAT runs in this process, seeded straight into its store (N sessions of one
scan, 50 subjects); each sync runs in a child process whose wall time, CPU time and peak RSS
(``os.wait4``) are measured, and the stand-in's CPU in this process over the same span
(``getrusage(RUSAGE_SELF)``: it serves on threads here), to tell whether the stand-in or the
client is the bottleneck. Two syncs per case: the first reads every scan count (one scans
listing per session), the second reuses them (what every cycle after the first does). The
baseline, in the same run, is the smallest scale with paging; growth is reported per session.

    .venv/bin/python benchmarks/sync/run.py                       # 10k and 50k sessions
    .venv/bin/python benchmarks/sync/run.py --scales 1000,10000   # quicker
    .venv/bin/python benchmarks/sync/run.py --json out.json       # also write the figures
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from connectors.testbed.xnat_standin import StandinXnat  # noqa: E402
from connectors.testbed.xnat_standin.store import Scan, Session  # noqa: E402

CHILD = """
import sys, json
sys.path.insert(0, {root!r})
from connectors.config import Settings, XnatConfig, WarehouseConfig
from connectors.warehouse.runs import RunContext
from connectors.xnat.client import XnatClient
from connectors.xnat.sync import sync_sessions
s = Settings(xnat=XnatConfig(url={url!r}, project="HNC", timeout=600.0),
             warehouse=WarehouseConfig(path={wh!r}))
rc = RunContext(settings=s, command="sync", arguments=[])
with XnatClient(s) as c:
    print(json.dumps(sync_sessions(rc, c)))
"""


def seed(x: StandinXnat, n: int) -> None:
    with x.store.lock:
        for i in range(n):
            s = Session("", "HNC", "", f"RA{i:06d}", f"1.2.826.0.1.9.{i}", "CT", "2021-03-04")
            s.scans[f"1.2.9.{i}"] = Scan("1", f"1.2.9.{i}", "CT", files={f"sop{i}": 10})
            x.store.archive(s, f"S{i % 50}", merge=False)


def _self_cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def one_sync(url: str, wh: str, env: dict[str, str]) -> dict[str, float]:
    code = CHILD.format(root=str(ROOT), url=url, wh=wh)
    t0, c0 = time.perf_counter(), _self_cpu()
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall, standin = time.perf_counter() - t0, _self_cpu() - c0
    out = json.loads(proc.stdout.read() if proc.stdout else b"{}")  # type: ignore[arg-type]
    assert status == 0, status
    return {
        "sessions": out["sessions"],
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_mb": round(usage.ru_maxrss / 1024, 1),
        "standin_cpu_s": round(standin, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scales", default="10000,50000")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    env = {**os.environ, "XNAT_USER": "bench", "XNAT_PASS": "bench-only"}
    results = []
    for n in [int(s) for s in args.scales.split(",")]:
        for version in ("1.8.10", "1.8.5"):
            with StandinXnat(users={"bench": "bench-only"}, version=version) as x:
                seed(x, n)
                with tempfile.TemporaryDirectory() as tmp:
                    wh = str(Path(tmp) / "w.duckdb")
                    first = one_sync(x.url, wh, env)
                    again = one_sync(x.url, wh, env)
            assert first["sessions"] == again["sessions"] == n
            results.append({"sessions": n, "xnat": version, "first": first, "again": again})
            print(json.dumps(results[-1]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    # Growth per profile: each scale against the smallest scale of the same XNAT version.
    for version in ("1.8.10", "1.8.5"):
        rows = [r for r in results if r["xnat"] == version]
        base = rows[0]
        for r in rows[1:]:
            scale = r["sessions"] / base["sessions"]
            for k in ("first", "again"):
                now, was = r[k], base[k]
                print(
                    f"{version:>6} {k:>5} {r['sessions']}/{base['sessions']} (x{scale:.0f}):"
                    f" wall x{now['wall_s'] / was['wall_s']:.2f},"
                    f" sync cpu x{now['cpu_s'] / was['cpu_s']:.2f},"
                    f" stand-in cpu x{now['standin_cpu_s'] / max(was['standin_cpu_s'], 0.01):.2f},"
                    f" peak {now['peak_mb']} MB vs {was['peak_mb']} MB"
                    f" (x{now['peak_mb'] / was['peak_mb']:.2f})"
                )
    # Paging-less against paging, same scale.
    for r in results:
        if r["xnat"] != "1.8.5":
            continue
        paged = next(p for p in results if p["xnat"] == "1.8.10" and p["sessions"] == r["sessions"])
        for k in ("first", "again"):
            print(
                f"{r['sessions']:>6} {k:>5} 1.8.5 vs 1.8.10: wall"
                f" x{r[k]['wall_s'] / paged[k]['wall_s']:.2f},"
                f" peak {r[k]['peak_mb']} MB vs {paged[k]['peak_mb']} MB"
            )


if __name__ == "__main__":
    main()
