"""``pacs2xnat demo``: the whole quarterly cycle, twice, on a synthetic cohort. No setup needed.

It starts a demo PACS (Debian's Orthanc when installed, else the embedded pynetdicom PACS) and
the stand-in XNAT on free loopback ports, writes a synthetic cohort's DICOM, master list and
rules workbook, then runs the real commands: a new-patient cycle dated three months ago, new
studies arrive on PACS, and an ongoing cycle today. ``demo serve`` starts the same two servers
and waits, so findscu, a browser or the ``xnat`` client can be pointed at them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors import console
from connectors.clock import TODAY_ENV
from connectors.errors import EXIT_OK, EXIT_SOME_FAILED, ConfigError, StepFailed
from connectors.testbed.cohort import Cohort, add_new_studies, make_cohort
from connectors.testbed.dicom_files import write_cohort
from connectors.testbed.orthanc import Orthanc, orthanc_binary
from connectors.testbed.pacs_scp import DemoPacs
from connectors.testbed.workbooks import write_demo_workbooks
from connectors.testbed.xnat_standin import StandinXnat
from connectors.testbed.xnat_standin.dqr import pacs_entry
from connectors.warehouse.dbt import copy_project
from connectors.warehouse.store import Warehouse

XNAT_PROJECT = "HNC"
XNAT_USER = "demo"
OUR_AET = "PACS2XNAT"
#: Small studies keep the demo under a minute; the pipeline is the same at any size.
INSTANCES_PER_SERIES = 2


@dataclass
class DemoServers:
    pacs: Any  # Orthanc | DemoPacs
    pacs_kind: str
    xnat: StandinXnat
    password: str

    @property
    def pacs_aet(self) -> str:
        return str(self.pacs.aet)

    def describe(self) -> dict[str, Any]:
        return {
            "pacs": {
                "host": self.pacs.host,
                "port": self.pacs.port,
                "aet": self.pacs_aet,
                "kind": self.pacs_kind,
            },
            "xnat": {
                "url": self.xnat.url,
                "user": XNAT_USER,
                "password": self.password,
                "project": XNAT_PROJECT,
            },
        }

    def add_studies(self, paths: list[Path]) -> None:
        if isinstance(self.pacs, Orthanc):
            self.pacs.upload(paths)
        else:
            self.pacs.add_files(paths)


#: ``embedded`` makes the demo use the embedded pynetdicom PACS even when Orthanc is installed
#: (benchmarks/cycle measures both); ``orthanc`` or unset: Orthanc when installed.
DEMO_PACS_ENV = "PACS2XNAT_DEMO_PACS"


def demo_uses_orthanc() -> bool:
    choice = os.environ.get(DEMO_PACS_ENV, "").strip().lower()
    if choice not in ("", "orthanc", "embedded"):
        raise ConfigError(f"{DEMO_PACS_ENV}={choice!r}: use orthanc or embedded")
    return choice != "embedded" and orthanc_binary() is not None


@contextlib.contextmanager
def demo_servers(workdir: Path, *, our_port: int) -> Iterator[DemoServers]:
    """Orthanc (or the embedded PACS) and the stand-in XNAT, stopped on exit."""
    password = secrets.token_urlsafe(12)
    destinations = {OUR_AET: ("127.0.0.1", our_port)}
    pacs: Any
    if demo_uses_orthanc():
        pacs = Orthanc(
            workdir / "orthanc",
            modalities={k: (k, h, p) for k, (h, p) in destinations.items()},
        )
        kind = "orthanc"
    else:
        pacs = DemoPacs(workdir / "pacs-files", destinations=destinations)
        kind = "embedded pynetdicom"
    (workdir / "pacs-files").mkdir(parents=True, exist_ok=True, mode=0o700)
    pacs.start()
    xnat = StandinXnat(
        users={XNAT_USER: password},
        projects=[XNAT_PROJECT],
        pacs=[pacs_entry(pacs, "DEMO")],
    )
    xnat.start()
    try:
        yield DemoServers(pacs, kind, xnat, password)
    finally:
        xnat.close()
        pacs.stop()


def write_config(path: Path, servers: dict[str, Any], *, our_port: int) -> Path:
    """The demo's pacs2xnat.toml for ``servers`` (``DemoServers.describe()``, or the line
    ``demo serve --json`` prints: benchmarks/cycle runs a cycle against that)."""
    pacs = servers["pacs"]
    path.write_text(
        "# written by pacs2xnat demo: the demo PACS and the stand-in XNAT on loopback\n"
        f'[pacs]\nhost = "{pacs["host"]}"\nport = {pacs["port"]}\n'
        f'called_aet = "{pacs["aet"]}"\ncalling_aet = "{OUR_AET}"\n'
        f'move_destination = "{OUR_AET}"\nreceive_port = {our_port}\n'
        "acse_timeout = 10.0\ndimse_timeout = 30.0\nnetwork_timeout = 30.0\n\n"
        f'[xnat]\nurl = "{servers["xnat"]["url"]}"\nproject = "{XNAT_PROJECT}"\ntimeout = 60.0\n'
        "dqr_poll_seconds = 0.5\ndqr_stall_timeout = 30.0\n\n"
        '[warehouse]\npath = "warehouse/pacs2xnat.duckdb"\n\n'
        "[load]\nbackoff_seconds = 0.5\n",
        encoding="utf-8",
    )
    return path


#: Runs one real pacs2xnat command in this process with ``--config``; returns its exit code.
#: The command line hands it in (``connectors.app.cli.run_in_process``): the test bed never
#: imports the CLI.
RunCommand = Callable[..., int]


def _step(run: RunCommand, config: Path, label: str, *args: str) -> int:
    console.say(f"demo: {label}: pacs2xnat {' '.join(args)}")
    code = run(config, *args)
    if code not in (EXIT_OK, EXIT_SOME_FAILED):
        raise StepFailed(f"demo stopped: pacs2xnat {' '.join(args)} exited {code}")
    return code


def run_demo(
    run: RunCommand, *, patients: int = 40, seed: int = 7, keep: Path | None = None
) -> dict[str, Any]:
    """Two cycles on a fresh workspace, each command run by ``run``; returns (and prints)
    where every output is."""
    started = time.monotonic()
    if keep is not None:
        workdir = keep.resolve()
        workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="pacs2xnat-demo-"))
    out_dir = (keep.resolve() / "outputs") if keep else Path.cwd() / "pacs2xnat-demo"
    project = copy_project(workdir / "project")
    today = dt.date.today()
    first_cycle = today - dt.timedelta(days=91)
    cohort = make_cohort(patients, seed, as_of=first_cycle)
    our_port = _free_port()
    saved_env = {k: os.environ.get(k) for k in ("XNAT_USER", "XNAT_PASS", TODAY_ENV)}
    summary: dict[str, Any] = {
        "workspace": str(workdir),
        "patients": patients,
        "seed": seed,
        "first_cycle": first_cycle.isoformat(),
        "second_cycle": today.isoformat(),
    }
    try:
        with demo_servers(workdir, our_port=our_port) as servers:
            os.environ["XNAT_USER"], os.environ["XNAT_PASS"] = XNAT_USER, servers.password
            config = write_config(project / "pacs2xnat.toml", servers.describe(), our_port=our_port)
            servers.add_studies(_dicom(cohort, workdir / "dicom" / "cycle1", None))
            inputs = _inputs(cohort, workdir / "inputs", project)
            summary["pacs"] = servers.describe()["pacs"]
            summary["xnat"] = {
                k: v for k, v in servers.describe()["xnat"].items() if k != "password"
            }
            _step(run, config, "the admin's lists", "patients", "import", str(inputs["master"]))
            _step(
                run,
                config,
                "the admin's lists",
                "rules",
                "import",
                str(inputs["rules"]),
                "--decided-by",
                "demo admin",
            )
            os.environ[TODAY_ENV] = first_cycle.isoformat()
            code1 = _step(run, config, f"cycle 1 (new patients, {first_cycle})", "run", "--restart")
            new = add_new_studies(cohort, first_cycle, today)
            servers.add_studies(_dicom(cohort, workdir / "dicom" / "cycle2", new))
            os.environ.pop(TODAY_ENV, None)
            code2 = _step(
                run,
                config,
                f"cycle 2 (ongoing, {today}, {len(new)} new studies)",
                "run",
                "--restart",
            )
            summary |= _collect(project, out_dir)
            summary["new_studies_cycle2"] = len(new)
            summary["exit_codes"] = [code1, code2]
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    summary["seconds"] = round(time.monotonic() - started, 1)
    _print_outputs(summary, kept=keep is not None)
    return summary


def _dicom(cohort: Cohort, folder: Path, studies: Any) -> list[Path]:
    return write_cohort(
        cohort, folder, studies, max_instances_per_series=INSTANCES_PER_SERIES, rows=32, cols=32
    )


def _inputs(cohort: Cohort, folder: Path, project: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    written = write_demo_workbooks(
        cohort, folder, project / "seeds" / "study_description_rules.csv"
    )
    return {"master": written["master_list"], "rules": written["rules_workbook"]}


def _collect(project: Path, out_dir: Path) -> dict[str, Any]:
    """Copy what a person opens out of the workspace; the counts the marts give."""
    warehouse = project / "warehouse"
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    outputs: dict[str, str] = {}
    for sub, pattern in (("reports", "data_availability.*"), ("exports", "ingest_*.csv")):
        for f in sorted((warehouse / sub).glob(pattern)):
            target = out_dir / f.name
            shutil.copy2(f, target)
            outputs[f.name] = str(target)
    wh = Warehouse(warehouse / "pacs2xnat.duckdb")

    def rows(mart: str) -> int:
        return len(wh.read_table(f"main.{mart}", columns=("1",))[1])

    counts: dict[str, Any] = {
        mart: rows(mart)
        for mart in (
            "pacs_study_selection",
            "description_triage",
            "linkage_report",
            "ingest_manifest",
            "ingest_failures",
            "reconciliation",
        )
    }
    counts["selection"] = {
        r["selection_status"]: r["number_of_studies"]
        for r in wh.read_relation("main.pacs_study_selection_summary")
    }
    counts["xnat_sessions"] = rows("data_availability_sessions")
    return {"outputs": outputs, "counts": counts}


def _print_outputs(summary: dict[str, Any], *, kept: bool) -> None:
    if console.json_mode():
        return
    say = console.say
    say("")
    say(
        f"demo: two quarterly cycles in {summary['seconds']} s "
        f"({summary['patients']} synthetic patients, seed {summary['seed']})"
    )
    for name, path in summary.get("outputs", {}).items():
        say(f"  open  {path}" if name.endswith((".html", ".xlsx")) else f"        {path}")
    counts = summary.get("counts", {})
    if counts.get("selection"):
        say("  selection: " + ", ".join(f"{v} {k}" for k, v in sorted(counts["selection"].items())))
    for mart in ("description_triage", "linkage_report", "ingest_failures"):
        if mart in counts:
            say(f"  {mart}: {counts[mart]} rows")
    if kept:
        say(f"  workspace (warehouse, logs, config): {summary['workspace']}")


def _free_port() -> int:
    from connectors.testbed.orthanc import free_port

    return free_port()


def serve(*, patients: int = 40, seed: int = 7, json_line: bool = False) -> None:
    """Start both servers with the cohort loaded into the PACS, print their addresses, wait."""
    workdir = Path(tempfile.mkdtemp(prefix="pacs2xnat-serve-"))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        with demo_servers(workdir, our_port=_free_port()) as servers:
            cohort = make_cohort(patients, seed)
            servers.add_studies(_dicom(cohort, workdir / "dicom", None))
            info = servers.describe()
            info["pacs"].pop("kind")
            if json_line:
                print(json.dumps(info), flush=True)
            else:
                x = info["xnat"]
                p = info["pacs"]
                console.err.print(
                    f"demo PACS ({servers.pacs_kind}): {p['aet']} at {p['host']}:{p['port']}\n"
                    f"stand-in XNAT: {x['url']} project {x['project']} "
                    f"(user {x['user']}, password {x['password']})\n"
                    f"e.g. findscu -S -k QueryRetrieveLevel=STUDY -k PatientID -aec {p['aet']} "
                    f"{p['host']} {p['port']}\nCtrl-C stops both.",
                    highlight=False,
                )
            stop.wait()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
