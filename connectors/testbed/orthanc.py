"""Start and stop Debian's Orthanc (``/usr/sbin/Orthanc``) in a private folder, for tests,
benchmarks and the demo.

Each instance gets its own JSON config, storage and index under ``workdir``, free loopback
ports for DICOM and HTTP, no plugins (``dicomweb=True``: Debian's DICOMweb plugin at
``dicomweb_url``), and ``TCP_NODELAY=1`` in its environment (Debian's DCMTK, which Orthanc's DICOM server uses, leaves Nagle on otherwise; pass ``tcp_nodelay=False``
to measure that default). Seed it with ``upload(paths)`` (REST ``POST /instances``); add
modalities at runtime with ``add_modality`` (REST ``PUT /modalities/<name>``).

    with Orthanc(tmp_path / "orthanc", limit_find_results=5) as pacs:
        pacs.upload(files)
        print(pacs.host, pacs.dicom_port, pacs.aet)
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

ORTHANC_BINARY = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
HOST = "127.0.0.1"


class OrthancError(RuntimeError):
    """Orthanc would not start, or answered a REST call with an error."""


_HANDED_OUT: set[int] = set()  # this process's picks: two picks before either is bound differ


def free_port(host: str = HOST) -> int:
    """A TCP port nobody listens on right now, outside the kernel's ephemeral range where it
    can: the OS's own pick (port 0) comes from that range, which is also where every outgoing
    connection's local port comes from, so a port picked early and listened on much later (the
    session's C-MOVE destination, half an hour of tests later) could meanwhile be the local end
    of some connection and fail with "Address already in use" (seen once in CI)."""
    span = _below_ephemeral()
    if span is not None:
        pick = random.SystemRandom()
        for _ in range(200):
            port = pick.randrange(*span)
            if port in _HANDED_OUT:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
            _HANDED_OUT.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _below_ephemeral(width: int = 16384) -> tuple[int, int] | None:
    """Up to ``width`` unprivileged ports just below ``ip_local_port_range``, or None when the
    range leaves fewer than 1,000 (Linux's default range starts at 32768)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    start = max(1024, low - width)
    return (start, low) if low - start >= 1000 else None


def orthanc_binary() -> str | None:
    """The Orthanc executable, or None when Debian's ``orthanc`` package is not installed."""
    found = shutil.which("Orthanc")
    if found:
        return found
    return ORTHANC_BINARY if os.access(ORTHANC_BINARY, os.X_OK) else None


class Orthanc:
    """One Orthanc process on free loopback ports. A context manager; ``stop()`` is idempotent.

    ``modalities`` maps a name to ``(aet, host, port)``: the AEs Orthanc knows (needed for
    C-MOVE destinations and, with ``check_called_aet``-style strictness, for C-FIND/C-GET).
    ``limit_find_results`` > 0 caps C-FIND answers (Orthanc then ends with Cancel 0xFE00).
    ``check_called_aet=True`` rejects associations whose called AE title is not ``aet``.
    ``config`` overrides or adds raw Orthanc configuration keys.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        aet: str = "ORTHANC",
        limit_find_results: int = 0,
        check_called_aet: bool = False,
        modalities: Mapping[str, tuple[str, str, int]] | None = None,
        tcp_nodelay: bool = True,
        config: Mapping[str, Any] | None = None,
        binary: str | None = None,
        start_timeout: float = 30.0,
        dicomweb: bool = False,
    ) -> None:
        self.workdir = Path(workdir)
        self.aet = aet
        self.host = HOST
        self.limit_find_results = limit_find_results
        self.check_called_aet = check_called_aet
        self.modalities = dict(modalities or {})
        self.tcp_nodelay = tcp_nodelay
        self.extra_config = dict(config or {})
        self.binary = binary or orthanc_binary()
        self.start_timeout = start_timeout
        self.dicomweb = dicomweb
        self.dicom_port = 0
        self.http_port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._http: http.client.HTTPConnection | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        """The DICOM port (same name as the other test-bed PACS use)."""
        return self.dicom_port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb root (``dicomweb=True``)."""
        return f"{self.url}/dicom-web"

    @property
    def log_path(self) -> Path:
        return self.workdir / "orthanc.log"

    def config_dict(self) -> dict[str, Any]:
        storage = self.workdir / "db"
        cfg: dict[str, Any] = {
            "Name": f"pacs2xnat-test-{self.aet}",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "StorageCompression": False,
            "Plugins": [],
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "SslEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": self.check_called_aet,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowGet": True,
            "DicomAlwaysAllowMove": True,
            "DicomCheckModalityHost": False,
            "DicomModalities": {
                name: {"AET": aet, "Host": host, "Port": port}
                for name, (aet, host, port) in self.modalities.items()
            },
            "DicomModalitiesInDatabase": False,
            "UnknownSopClassAccepted": True,
            "LimitFindResults": self.limit_find_results,
            "LimitFindInstances": self.limit_find_results,
            "SaveJobs": False,
            "StableAge": 1,
            "DicomScpTimeout": 30,
            "DicomAssociationCloseDelay": 0,
            "DefaultEncoding": "Latin1",
            "DeidentifyLogs": True,
            "HttpThreadsCount": 8,
            "ConcurrentJobs": 2,
        }
        if self.dicomweb:  # Debian's orthanc-dicomweb: QIDO-RS/WADO-RS under /dicom-web/
            cfg["Plugins"] = [DICOMWEB_PLUGIN]
            cfg["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/"}
        cfg.update(self.extra_config)
        return cfg

    def start(self) -> Orthanc:
        """Start Orthanc and wait until both its REST API and its DICOM port answer."""
        if self.binary is None:
            raise OrthancError("Orthanc is not installed (apt-get install orthanc)")
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        last_error = ""
        for _attempt in range(3):  # a free port can be taken between picking and binding it
            self.dicom_port, self.http_port = free_port(), free_port()
            cfg_path = self.workdir / "orthanc.json"
            cfg_path.write_text(json.dumps(self.config_dict(), indent=2), encoding="utf-8")
            env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}
            if self.tcp_nodelay:
                env["TCP_NODELAY"] = "1"
            log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
            try:
                self._proc = subprocess.Popen(
                    [self.binary, str(cfg_path)],
                    cwd=self.workdir,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            finally:
                log.close()
            if self._wait_ready():
                logger.debug("Orthanc %s up: dicom %s http %s", self.aet, self.dicom_port, self.url)
                return self
            last_error = self._tail_log()
            self.stop()
        raise OrthancError(f"Orthanc did not start in {self.workdir}:\n{last_error}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            try:
                try:
                    self.rest("GET", "/system")
                except OrthancError as e:  # AuthenticationEnabled: it answers, but not us
                    if "HTTP 401" not in str(e):
                        raise
                with socket.create_connection((self.host, self.dicom_port), timeout=1):
                    return True
            except (OSError, OrthancError, http.client.HTTPException):
                self._reset_http()
                time.sleep(0.1)
        return False

    def _tail_log(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return ""

    def stop(self, timeout: float = 3.0) -> None:
        """Stop Orthanc: SIGTERM, then SIGKILL after ``timeout`` seconds (Orthanc 1.10 takes
        2-4 s to stop; 0 kills at once, fine for a throwaway test instance). Idempotent."""
        self._reset_http()
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM if timeout > 0 else signal.SIGKILL)
        try:
            proc.wait(timeout=max(timeout, 0.01))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def __enter__(self) -> Orthanc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ REST

    def _reset_http(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def rest(self, method: str, path: str, body: bytes | str | None = None) -> Any:
        """One REST call on a kept-alive connection; JSON answers are decoded."""
        if isinstance(body, str):
            body = body.encode("utf-8")
        for attempt in range(2):
            if self._http is None:
                self._http = http.client.HTTPConnection(self.host, self.http_port, timeout=60)
            try:
                self._http.request(method, path, body=body)
                resp = self._http.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException):
                self._reset_http()
                if attempt:
                    raise
                continue
            if resp.status >= 400:
                raise OrthancError(f"Orthanc {method} {path}: HTTP {resp.status}: {data[:300]!r}")
            if resp.getheader("Content-Type", "").startswith("application/json") and data:
                return json.loads(data)
            return data
        raise OrthancError(f"Orthanc {method} {path}: no answer")  # pragma: no cover

    def upload(self, paths: Iterable[Path]) -> int:
        """Store DICOM files through REST ``POST /instances``; returns how many were stored."""
        n = 0
        for p in paths:
            self.rest("POST", "/instances", Path(p).read_bytes())
            n += 1
        return n

    def add_modality(self, name: str, aet: str, host: str, port: int) -> None:
        """Declare (or change) a DICOM modality at runtime (``PUT /modalities/<name>``)."""
        body = json.dumps({"AET": aet, "Host": host, "Port": port})
        self.rest("PUT", f"/modalities/{name}", body)
        self.modalities[name] = (aet, host, port)

    def studies(self) -> list[str]:
        """Orthanc's ids of the studies it holds."""
        return list(self.rest("GET", "/studies"))

    def statistics(self) -> dict[str, Any]:
        return dict(self.rest("GET", "/statistics"))

    def delete_instance(self, sop_instance_uid: str) -> bool:
        """Delete one instance by SOP Instance UID (to make a study incomplete on purpose)."""
        found = self.rest(
            "POST",
            "/tools/find",
            json.dumps({"Level": "Instance", "Query": {"SOPInstanceUID": sop_instance_uid}}),
        )
        for oid in found:
            self.rest("DELETE", f"/instances/{oid}")
        return bool(found)


__all__ = ["Orthanc", "OrthancError", "free_port", "orthanc_binary"]
