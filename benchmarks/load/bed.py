"""What the load-side benchmarks share (``benchmarks/admin_wait``, ``benchmarks/two_loaders``):
a real Orthanc seeded with a synthetic cohort, the stand-in XNAT in its own process with one
project per variant, a latency proxy in front of the PACS, and a template workspace on the
DuckDB file whose query step is done (``patients import``, ``rules import``, ``query``), copied
per variant, each command a real ``pacs2xnat`` child process.

The latency proxy forwards every chunk ``latency`` seconds after it arrived, in both
directions, without limiting bandwidth (a far PACS, not a slow one): a C-GET pays one round
trip per instance (the C-STORE request and its answer), so it is latency-bound. It counts the
associations open at once (one ends when the loader closes its socket, as
``tests/support/fault_proxy.py`` counts).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "connectors.app.cli"]
USER, PASSWORD = "bench", "bench-synthetic"

STANDIN = """
import sys
from connectors.testbed.xnat_standin import StandinXnat
x = StandinXnat(users={%r: %r}, projects=%r, pacs=%r).start()
print(x.url, flush=True)
sys.stdin.read()
x.close()
"""


def start_standin(
    projects: list[str], pacs: list[dict[str, object]] | None = None
) -> tuple[subprocess.Popen[str], str]:
    """The stand-in XNAT (with its DQR plugin pointed at ``pacs``) in a child process, so its
    CPU is its own: the process and its URL. ``stop_standin`` ends it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", STANDIN % (USER, PASSWORD, projects, pacs)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def stop_standin(proc: subprocess.Popen[str] | None) -> None:
    """End a ``start_standin`` child (it stops when its stdin closes)."""
    if proc is not None and proc.stdin is not None:
        proc.stdin.close()
        proc.wait(timeout=30)


class LatencyProxy:
    """TCP relay to ``target`` adding ``latency`` seconds one way, each direction."""

    def __init__(self, target: tuple[str, int], latency: float) -> None:
        self.target, self.latency = target, latency
        self.connections = self.open_now = self.most_open = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                return
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.settimeout(None)
            with self._lock:
                self.connections += 1
                self.open_now += 1
                self.most_open = max(self.most_open, self.open_now)
            done = threading.Event()
            for src, dst, ours in ((client, upstream, True), (upstream, client, False)):
                args = (src, dst, done, ours)
                threading.Thread(target=self._pipe, args=args, daemon=True).start()

    def _pipe(
        self, src: socket.socket, dst: socket.socket, done: threading.Event, ours: bool
    ) -> None:
        chunks: queue.Queue[tuple[float, bytes]] = queue.Queue()

        def send() -> None:
            with contextlib.suppress(OSError):
                while True:
                    due, data = chunks.get()
                    time.sleep(max(0.0, due - time.monotonic()))
                    if not data:
                        dst.shutdown(socket.SHUT_WR)
                        return
                    dst.sendall(data)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                chunks.put((time.monotonic() + self.latency, data))
        if ours:  # the loader closed its socket: the association is over for it
            with self._lock:
                self.open_now -= 1
        chunks.put((time.monotonic() + self.latency, b""))
        sender.join()
        if done.is_set():  # the second direction to end
            for s in (src, dst):
                s.close()
        done.set()

    def close(self) -> None:
        self._listener.close()


@dataclass
class Measured:
    wall: float
    code: int
    stdout: str
    stderr: str


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PACS2XNAT", "XNAT_"))}
    env |= {"DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "PYTHONPATH": str(ROOT)}
    env |= {"XNAT_USER": USER, "XNAT_PASS": PASSWORD}
    return env | extra


def start(cmd: list[str], cwd: Path, env: dict[str, str], out: Path) -> subprocess.Popen[bytes]:
    with open(out, "wb") as log:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 1800) -> Measured:
    started = time.monotonic()
    done = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    return Measured(time.monotonic() - started, done.returncode, done.stdout, done.stderr)


class Bed:
    """Orthanc + stand-in XNAT + a template workspace whose query step is done."""

    def __init__(self, root: Path, patients: int, instances: int, projects: list[str]) -> None:
        self.root, self.patients, self.instances, self.projects = (
            root,
            patients,
            instances,
            projects,
        )
        self.orthanc: object = None
        self.standin: subprocess.Popen[str] | None = None
        self.xnat_url = ""

    def __enter__(self) -> Bed:
        from connectors.testbed.cohort import make_cohort
        from connectors.testbed.dicom_files import write_cohort
        from connectors.testbed.orthanc import Orthanc

        self.standin, self.xnat_url = start_standin(self.projects)
        orthanc = Orthanc(self.root / "orthanc", tcp_nodelay=True)
        orthanc.start()
        self.orthanc = orthanc
        self.cohort = make_cohort(self.patients, 7)
        files = write_cohort(
            self.cohort,
            self.root / "dicom",
            None,
            max_instances_per_series=self.instances,
            rows=32,
            cols=32,
        )
        orthanc.upload(files)
        shutil.rmtree(self.root / "dicom")
        self.template = self._template()
        return self

    @property
    def pacs(self) -> tuple[str, int]:
        return (self.orthanc.host, self.orthanc.port)  # type: ignore[attr-defined]

    def config(
        self,
        project_dir: Path,
        *,
        xnat_project: str,
        pacs_port: int | None = None,
        max_associations: int = 2,
        url: str = "",
    ) -> Path:
        from connectors.testbed.demo import write_config
        from connectors.testbed.orthanc import free_port

        host, port = self.pacs
        servers = {
            "pacs": {"host": host, "port": pacs_port or port, "aet": "ORTHANC"},
            "xnat": {"url": self.xnat_url},
        }
        path = write_config(project_dir / "pacs2xnat.toml", servers, our_port=free_port())
        text = path.read_text(encoding="utf-8")
        text = text.replace('project = "HNC"', f'project = "{xnat_project}"')
        text = text.replace("[pacs]\n", f"[pacs]\nmax_associations = {max_associations}\n")
        if url:
            text = text.replace("[warehouse]\n", f'[warehouse]\nurl = "{url}"\n')
        path.write_text(text, encoding="utf-8")
        return path

    def _template(self) -> Path:
        from connectors.testbed.workbooks import write_demo_workbooks
        from connectors.warehouse.dbt import copy_project

        project = copy_project(self.root / "template")
        config = self.config(project, xnat_project=self.projects[0])
        inputs = write_demo_workbooks(
            self.cohort, project / "inputs", project / "seeds" / "study_description_rules.csv"
        )
        for args in (
            ["patients", "import", str(inputs["master_list"])],
            ["rules", "import", str(inputs["rules_workbook"]), "--decided-by", "bench"],
            ["query"],
        ):
            m = run([*CLI, "--quiet", "--config", str(config), *args], project, clean_env())
            if m.code != 0:
                raise SystemExit(f"{' '.join(args)} exited {m.code}:\n{m.stderr[-3000:]}")
        (project / "pacs2xnat.toml").unlink()
        return project

    def workspace(self, name: str) -> Path:
        """A copy of the template (its DuckDB warehouse included)."""
        dest = self.root / name
        shutil.copytree(self.template, dest)
        return dest

    def __exit__(self, *exc: object) -> None:
        if self.orthanc is not None:
            self.orthanc.stop()  # type: ignore[attr-defined]
        stop_standin(self.standin)


def summary(out: str) -> dict[str, object]:
    """The ``--json`` summary a command printed on stdout (pretty-printed JSON)."""
    with contextlib.suppress(ValueError):
        got = json.loads(out[out.index("{") :])
        if isinstance(got, dict):
            return got
    return {}
