"""PostgreSQL fixtures (a pytest plugin registered by tests/conftest.py): one real Debian
PostgreSQL for the session, started by ``connectors/testbed/postgres.py`` as an unprivileged
user on a free loopback port; skipped on a developer's machine without it, a failure under
``CI=true``.

- ``postgres``: the session's ``PostgresCluster``; ``$PGPASSFILE`` names its owner-only pgpass
  file for the whole session (the password is never in a URL, argv or the config).
- ``pg_url``: a fresh, empty database on it for one test (``postgresql://user@host:port/db``).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from connectors.testbed.postgres import PostgresCluster, postgres_bin_dir
from tests.support.real_parts import require_binary

_databases = itertools.count(1)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    bin_dir = postgres_bin_dir()
    require_binary(str(bin_dir / "postgres") if bin_dir else "postgres", "postgresql")
    with PostgresCluster(bin_dir) as cluster, pytest.MonkeyPatch.context() as mp:
        mp.setenv("PGPASSFILE", str(cluster.pgpass))
        mp.delenv("PGPASSWORD", raising=False)
        yield cluster


@pytest.fixture
def pg_url(postgres: PostgresCluster) -> str:
    name = f"test_{os.getpid()}_{next(_databases)}"
    postgres.create_database(name)
    return postgres.url_for(name)
