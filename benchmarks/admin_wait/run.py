"""Benchmark: how long the admin's commands wait for the DuckDB warehouse while a real
`pacs2xnat load` runs, against the same commands with no load running (the baseline).

    .venv/bin/python benchmarks/admin_wait/run.py            # 60 studies, 3 baseline rounds
    .venv/bin/python benchmarks/admin_wait/run.py --quick    # 25 studies, 1 round, no load alone

One real Orthanc holds a synthetic cohort and the stand-in XNAT runs in its own process
(``benchmarks/load/bed.py``); the loader reaches the PACS through a proxy adding ``--latency``
seconds each way, so the load lasts minutes without burning CPU. A template workspace has run
``patients import``, ``rules import`` and ``query``; this copy of it runs ``build`` once, then:

1. **baseline**: ``report``, ``failures``, ``build --force``, ``export`` in turn, ``--rounds``
   times, nothing else running;
2. **during a load**: ``pacs2xnat load --limit STUDIES`` starts, and the same four commands
   run in turn, again and again, until it exits (a command counts if it started while the
   load ran);
3. (unless ``--quick``) **the load alone**, into another XNAT project from another copy of the
   workspace: the baseline of the load's own wall time.

Every command is a real child process run by ``timed_cli.py``, which records the time it spent
in the warehouse lock's wait (``WarehouseLock.acquire``) — the loader's too. Reported per
command: wall time (median) during the load × baseline, and the wait's median and max, in
seconds and × the command's baseline wall time; then the loader's own waits and wall time ×
the load alone. Checked: every admin command exits 0 or 1, every study loaded exactly once.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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

from benchmarks.load.bed import Bed, LatencyProxy, clean_env, summary  # noqa: E402

TIMED = [sys.executable, str(HERE / "timed_cli.py")]
COMMANDS = {
    "report": ["report"],
    "failures": ["failures"],
    "build": ["build", "--force"],
    "export": ["export"],
}


@dataclass
class Ran:
    command: str
    wall: float
    code: int
    waited: float
    waits: int
    during: bool = False


@dataclass
class Load:
    wall: float = 0.0
    loaded: int = 0
    attempts: int = 0
    studies: int = 0
    waits: dict[str, float] = field(default_factory=dict)


def timed(config: Path, ws: Path, args: list[str], tag: str) -> Ran:
    out = ws / f"wait-{tag}.json"
    env = clean_env(BENCH_WAIT_OUT=str(out))
    started = time.monotonic()
    done = subprocess.run(
        [*TIMED, "--quiet", "--config", str(config), *args],
        cwd=ws,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.monotonic() - started
    if done.returncode not in (0, 1):
        print(f"{' '.join(args)} exited {done.returncode}:\n{done.stderr[-2000:]}", file=sys.stderr)
    seen = json.loads(out.read_text()) if out.is_file() else {"waited": 0.0, "waits": 0}
    return Ran(args[0], wall, done.returncode, float(seen["waited"]), int(seen["waits"]))


def load(ws: Path, config: Path, studies: int, admin: bool, ran: list[Ran]) -> Load:
    """One `load --limit studies`; with ``admin`` the four commands run in turn until it
    exits."""
    out, waits = ws / "load.json", ws / "wait-load.json"
    env = clean_env(BENCH_WAIT_OUT=str(waits))
    started = time.monotonic()
    with open(out, "w", encoding="utf-8") as stdout, open(ws / "load.err", "wb") as stderr:
        proc = subprocess.Popen(
            [*TIMED, "--json", "--config", str(config), "load", "--limit", str(studies)],
            cwd=ws,
            env=env,
            stdout=stdout,
            stderr=stderr,
        )
    k = 0
    while admin and proc.poll() is None:
        name = list(COMMANDS)[k % len(COMMANDS)]
        r = timed(config, ws, COMMANDS[name], f"{name}-{k}")
        r.during = True
        ran.append(r)
        k += 1
    proc.wait(timeout=7200)
    got = Load(wall=time.monotonic() - started)
    if proc.returncode not in (0, 1):
        err = (ws / "load.err").read_text(errors="replace")[-3000:]
        raise SystemExit(f"load exited {proc.returncode}:\n{err}")
    s = summary(out.read_text())
    got.loaded, got.studies = int(s.get("loaded", 0)), int(s.get("studies", 0))  # type: ignore[call-overload]
    got.waits = json.loads(waits.read_text())
    with duckdb.connect(str(ws / "warehouse" / "pacs2xnat.duckdb"), read_only=True) as con:
        row = con.execute(
            "select count(*), count(distinct study_instance_uid) filter (outcome = 'loaded') "
            "from raw.ingest_attempts"
        ).fetchone()
    assert row is not None
    got.attempts = int(row[0])
    if int(row[1]) != got.loaded or got.loaded != got.studies:
        raise SystemExit(f"load: {got.loaded} loaded of {got.studies}, {row[1]} in the warehouse")
    return got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--patients", type=int, default=20)
    ap.add_argument("--studies", type=int, default=60, help="load --limit")
    ap.add_argument("--instances", type=int, default=4, help="at most, per series")
    ap.add_argument("--latency", type=float, default=0.1, help="seconds, one way, to the PACS")
    ap.add_argument("--rounds", type=int, default=3, help="baseline rounds of the 4 commands")
    ap.add_argument("--quick", action="store_true", help="25 studies, 1 round, no load alone")
    args = ap.parse_args()
    if args.quick:
        args.studies, args.rounds = 25, 1
    load_before = os.getloadavg()[0]
    ran: list[Ran] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-admin-") as tmp,
        Bed(Path(tmp), args.patients, args.instances, ["ADMIN", "ALONE"]) as bed,
    ):
        proxy = LatencyProxy(bed.pacs, args.latency)
        ws = bed.workspace("admin")
        config = bed.config(ws, xnat_project="ADMIN", pacs_port=proxy.port)
        first = timed(config, ws, ["build"], "first")
        if first.code != 0:
            raise SystemExit("the first build failed")
        for r in range(args.rounds):
            for name, cmd in COMMANDS.items():
                ran.append(timed(config, ws, cmd, f"{name}-base{r}"))
        with_admin = load(ws, config, args.studies, True, ran)
        print(f"load with admin commands: {with_admin.wall:.1f} s", file=sys.stderr)
        alone = None
        if not args.quick:
            ws2 = bed.workspace("alone")
            config2 = bed.config(ws2, xnat_project="ALONE", pacs_port=proxy.port)
            timed(config2, ws2, ["build"], "first")
            alone = load(ws2, config2, args.studies, False, [])
        proxy.close()
    report(ran, with_admin, alone, args, load_before)
    ok = all(r.code in (0, 1) for r in ran)
    return 0 if ok else 1


def report(
    ran: list[Ran], with_admin: Load, alone: Load | None, args: argparse.Namespace, load0: float
) -> None:
    print(
        f"\n{with_admin.studies} studies (cohort of {args.patients}, <= {args.instances} "
        f"instances a series), PACS latency {args.latency * 1000:.0f} ms each way; load "
        f"average {load0:.1f} before, {os.getloadavg()[0]:.1f} after; baseline: the same "
        "command with no load running\n"
    )
    print(
        "| command | runs: no load / during | wall no load (s, median) | wall during (median) | "
        "wall × baseline | waited during: median (s) | max (s) | max × baseline wall | "
        "waits (lock found taken) | exit codes |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name in COMMANDS:
        base = [r for r in ran if r.command == name and not r.during]
        dur = [r for r in ran if r.command == name and r.during]
        if not base or not dur:
            print(f"| {name} | {len(base)} / {len(dur)} | – | – | – | – | – | – | – | – |")
            continue
        b = statistics.median(r.wall for r in base)
        d = statistics.median(r.wall for r in dur)
        w = [r.waited for r in dur]
        codes = sorted({r.code for r in base + dur})
        print(
            f"| {name} | {len(base)} / {len(dur)} | {b:.1f} | {d:.1f} | {d / b:.2f} | "
            f"{statistics.median(w):.2f} | {max(w):.2f} | {max(w) / b:.2f} | "
            f"{sum(r.waits for r in dur)} | {codes} |"
        )
    base_wait = max((r.waited for r in ran if not r.during), default=0.0)
    print(f"\nlongest wait of any command with no load running: {base_wait:.2f} s")
    lw = with_admin.waits
    print(
        f"loader during the admin commands: {with_admin.wall:.1f} s wall, {with_admin.loaded} "
        f"loaded ({with_admin.attempts} attempt rows), waited {lw['waited']:.1f} s in "
        f"{lw['waits']} waits (longest {lw['longest']:.1f} s)"
    )
    if alone is not None:
        print(
            f"load alone: {alone.wall:.1f} s wall, {alone.loaded} loaded; with the admin "
            f"commands × load alone: {with_admin.wall / alone.wall:.2f}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
