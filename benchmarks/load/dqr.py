"""DQR-mode load of 30 studies with 1 and with 4 requests in flight, in one run on the same data.

    .venv/bin/python benchmarks/load/dqr.py                   # 30 CT studies x 50 images
    .venv/bin/python benchmarks/load/dqr.py --studies 6       # a quick look
    .venv/bin/python benchmarks/load/dqr.py --polls 5,0.5     # the default poll, and a short one

Orthanc (Debian, TCP_NODELAY=1) holds the studies; the stand-in XNAT runs in its own process
with its DQR plugin pointed at that Orthanc (``GET /xapi/pacs``). Each variant is
``run_load(mode="dqr")`` in its own process (``end_to_end.py``'s child), into a project of its
own, so every study is requested, retrieved by the plugin and archived each time. Variants:
``[xnat] dqr_in_flight`` 1 and 4, for each ``dqr_poll_seconds`` in ``--polls`` (5 s is the
default). The baseline is 1 in flight with the same poll; the figure is the speed-up of 4.

What bounds the speed-up: the stand-in's plugin executes one request at a time (one dequeue
worker, as a real PACS whose DQR availability allows one thread: PacsDequeueThread stops when
``PacsThreads.isOversubscribed(pacs, availability.getThreads())``), so 4 in flight overlaps
the client's own work per study (the DQR query, the import request, the polls and their
sleeps) with the plugin's retrieval, not four retrievals with each other.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bed import start_standin, stop_standin  # noqa: E402
from end_to_end import run_child, seed_orthanc  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--studies", type=int, default=30)
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--size", type=int, default=256, help="image rows = columns")
    ap.add_argument(
        "--in-flight", default="1,4", help="dqr_in_flight values; the first is the base"
    )
    ap.add_argument("--polls", default="5", help="dqr_poll_seconds values")
    ap.add_argument("--repeat", type=int, default=1, help="interleaved rounds; fastest kept")
    args = ap.parse_args()
    flights = [int(v) for v in args.in_flight.split(",")]
    polls = [float(v) for v in args.polls.split(",")]

    from connectors.testbed.orthanc import Orthanc
    from connectors.testbed.xnat_standin.dqr import pacs_entry

    root = Path(tempfile.mkdtemp(prefix="bench_dqr_"))
    orthanc = Orthanc(root / "orthanc", tcp_nodelay=True)
    standin = None
    try:
        orthanc.start()
        pacs = [pacs_entry(orthanc, "ORTHANC")]
        cases = [(f, p, r) for r in range(args.repeat) for p in polls for f in flights]
        projects = [f"DQR{i}" for i in range(len(cases))]
        standin, url = start_standin(projects, pacs)
        studies = seed_orthanc(orthanc, root / "src", args.studies, args.images, args.size)
        others = {"xnat_cpu": standin.pid, "pacs_cpu": orthanc.pid}
        best: dict[tuple[int, float], dict[str, Any]] = {}
        for (flight, poll, r), project in zip(cases, projects, strict=True):
            spec = {
                "pacs_port": orthanc.port,
                "xnat_url": url,
                "assoc": 1,
                "studies": studies,
                "variant": "load",
                "mode": "dqr",
                "in_flight": flight,
                "poll": poll,
                "project": project,
                "work": str(root / f"w-{project}"),
            }
            got = run_child(spec, others)
            print(f"in flight {flight}, poll {poll:g} s, round {r}: {got}", flush=True)
            if (flight, poll) not in best or got["seconds"] < best[(flight, poll)]["seconds"]:
                best[(flight, poll)] = got
        report(best, flights, polls, args)
    finally:
        orthanc.stop()
        stop_standin(standin)
        shutil.rmtree(root, ignore_errors=True)


def report(
    best: dict[tuple[int, float], dict[str, Any]],
    flights: list[int],
    polls: list[float],
    args: argparse.Namespace,
) -> None:
    mb = args.studies * args.images * (args.size * args.size * 2) / 1e6
    print(
        f"\nDQR load of {args.studies} studies x {args.images} images {args.size}x{args.size}"
        f" (~{mb:.0f} MB), fastest of {args.repeat} round(s); base = {flights[0]} in flight"
    )
    print(
        f"{'in flight':>9}{'poll s':>8}{'seconds':>9}{'loading s':>11}{'x base':>8}"
        f"{'speed-up':>10}{'peak RSS MB':>13}{'CPU s: client':>15}{'XNAT':>6}{'PACS':>6}"
    )
    for poll in polls:
        base = best[(flights[0], poll)]
        for flight in flights:
            r = best[(flight, poll)]
            print(
                f"{flight:>9}{poll:>8g}{r['seconds']:>9.1f}{r['loading_seconds']:>11.1f}"
                f"{r['loading_seconds'] / base['loading_seconds']:>8.2f}"
                f"{base['loading_seconds'] / r['loading_seconds']:>10.2f}"
                f"{r['rss_mb']:>13.0f}{r['cpu']:>15.1f}{r['xnat_cpu']:>6.1f}{r['pacs_cpu']:>6.1f}"
            )


if __name__ == "__main__":
    main()
