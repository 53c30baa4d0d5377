"""Start and stop Debian's PostgreSQL (``/usr/lib/postgresql/<v>/bin``) in a private folder,
for tests and benchmarks of the shared warehouse.

PostgreSQL refuses to run as root, so when we are root the cluster belongs to an unprivileged
system user (``pacs2xnat-test``, created with ``useradd`` if missing) and every server program
runs through ``runuser``. The cluster listens on a free loopback port only (no Unix socket),
with ``scram-sha-256`` password authentication; the password is never in a URL or argv: it is
in an owner-only ``pgpass`` file that ``$PGPASSFILE`` names (libpq, psycopg and dbt-postgres
read it).

    with PostgresCluster(tmp) as pg:
        os.environ["PGPASSFILE"] = str(pg.pgpass)
        print(pg.url)  # postgresql://pacs2xnat@127.0.0.1:54321/pacs2xnat
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from connectors.testbed.orthanc import HOST, free_port

TEST_USER = "pacs2xnat-test"
ROLE = "pacs2xnat"
DATABASE = "pacs2xnat"


class PostgresError(RuntimeError):
    """The cluster would not initialise or start."""


def postgres_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<v>/bin`` holding initdb and postgres, if any."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    return Path(found[-1]).parent if found else None


def _ensure_test_user() -> None:
    """The unprivileged system user the server runs as when we are root."""
    probe = subprocess.run(["id", "-u", TEST_USER], capture_output=True, check=False)
    if probe.returncode == 0:
        return
    made = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", TEST_USER],
        capture_output=True,
        text=True,
        check=False,
    )
    # 9: another test session created it at the same moment
    if made.returncode not in (0, 9):
        raise PostgresError(f"useradd {TEST_USER} failed: {made.stderr.strip()}")


class PostgresCluster:
    """One PostgreSQL server in a fresh temporary folder on a free loopback port."""

    def __init__(self, bin_dir: Path | None = None) -> None:
        found = bin_dir or postgres_bin_dir()
        if found is None:
            raise PostgresError("PostgreSQL not found: apt-get install postgresql")
        self.bin_dir: Path = found
        self.host = HOST
        self.port = 0
        self.role = ROLE
        self.database = DATABASE
        self.root: Path | None = None
        self._as_user: list[str] = []

    @property
    def data_dir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def pgpass(self) -> Path:
        """Owner-only ``host:port:db:user:password`` lines (``$PGPASSFILE``)."""
        assert self.root is not None
        return self.root.parent / f"{self.root.name}.pgpass"

    @property
    def url(self) -> str:
        """The warehouse URL pacs2xnat takes (no password: that is in ``pgpass``)."""
        return f"postgresql://{self.role}@{self.host}:{self.port}/{self.database}"

    def url_for(self, database: str) -> str:
        return f"postgresql://{self.role}@{self.host}:{self.port}/{database}"

    def _run(self, program: str, *args: str, timeout: float = 60) -> str:
        cmd = [*self._as_user, str(self.bin_dir / program), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise PostgresError(f"{program} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def start(self) -> PostgresCluster:
        # Not under pytest's tmp folders: they are root-only, the server user could not enter.
        self.root = Path(tempfile.mkdtemp(prefix="pacs2xnat-pg-"))
        password = secrets.token_urlsafe(18)
        pwfile = self.root / "pw"
        pwfile.write_text(password + "\n")
        if os.geteuid() == 0:
            _ensure_test_user()
            shutil.chown(self.root, TEST_USER)
            shutil.chown(pwfile, TEST_USER)
            self._as_user = ["runuser", "-u", TEST_USER, "--"]
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            self.role,
            "--pwfile",
            str(pwfile),
            "--auth-local=reject",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        pwfile.unlink()
        self.pgpass.write_text(f"{self.host}:*:*:{self.role}:{password}\n")
        os.chmod(self.pgpass, 0o600)
        self.port = free_port()
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-c listen_addresses={self.host} -c port={self.port} "
            "-c unix_socket_directories='' -c fsync=off -c full_page_writes=off "
            "-c synchronous_commit=off -c max_connections=60",
            "start",
            timeout=90,
        )
        self.create_database(self.database)
        return self

    def create_database(self, name: str) -> None:
        """A fresh database (``createdb`` with the password from ``pgpass``)."""
        self._client("createdb", name)

    def _client(self, program: str, *args: str) -> None:
        env = {**os.environ, "PGPASSFILE": str(self.pgpass)}
        cmd = [str(self.bin_dir / program), "-h", self.host, "-p", str(self.port)]
        done = subprocess.run(
            [*cmd, "-U", self.role, *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise PostgresError(f"{program} {' '.join(args)}: {done.stderr.strip()}")

    def stop(self) -> None:
        if self.root is None:
            return
        if self.port:
            with contextlib.suppress(PostgresError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        with contextlib.suppress(OSError):
            self.pgpass.unlink()
        for _ in range(3):
            try:
                shutil.rmtree(self.root)
                break
            except OSError:
                time.sleep(0.2)
        self.root = None

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["PostgresCluster", "PostgresError", "postgres_bin_dir"]
