"""The acceptance run against a real XNAT (a pytest plugin registered by tests/conftest.py).

    XNAT_USER=... XNAT_PASS=... pytest -m real_xnat --xnat-url https://xnat.example.org \\
        --xnat-project P2X_TEST [--xnat-dqr]

``target_xnat`` gives each acceptance test the stand-in always, and the real XNAT too when
``--xnat-url`` is given (that parameter carries the ``real_xnat`` mark, so ``-m real_xnat``
runs only it; CI never passes a URL). Credentials come from the environment (or ~/.netrc),
never from the command line. The tests touch only ``--xnat-project`` and remove only what
they created.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from connectors.config import Settings, XnatConfig


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("real_xnat", "acceptance run against a real XNAT")
    group.addoption("--xnat-url", default="", help="the XNAT to check (credentials from env)")
    group.addoption("--xnat-project", default="", help="a test project on it (only one touched)")
    group.addoption("--xnat-dqr", action="store_true", help="also check its DQR plugin")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "target_xnat" not in metafunc.fixturenames:
        return
    params: list[Any] = ["standin"]
    if metafunc.config.getoption("--xnat-url"):
        params.append(pytest.param("real", marks=pytest.mark.real_xnat))
    metafunc.parametrize("target_xnat", params, indirect=True)


@dataclass
class Target:
    kind: str  # "standin" or "real"
    settings: Settings
    dqr: bool  # whether the DQR checks apply
    standin: Any = None  # the StandinHandle, for the stand-in


@pytest.fixture
def target_xnat(request: pytest.FixtureRequest, tmp_path: Any) -> Target:
    if request.param == "standin":
        factory: Callable[..., Any] = request.getfixturevalue("standin_xnat_factory")
        pacs = [
            {"id": 1, "label": "P", "aeTitle": "P", "host": "127.0.0.1", "queryRetrievePort": 9}
        ]
        h = factory(pacs=pacs)
        xnat = XnatConfig(url=h.url, project=h.project, timeout=30.0)
        return Target("standin", Settings(base_dir=tmp_path, xnat=xnat), True, h)
    url = request.config.getoption("--xnat-url")
    project = request.config.getoption("--xnat-project")
    if not project:
        raise pytest.UsageError("--xnat-url needs --xnat-project (a test project)")
    xnat = XnatConfig(url=url, project=project, timeout=600.0)
    return Target(
        "real", Settings(base_dir=tmp_path, xnat=xnat), request.config.getoption("--xnat-dqr")
    )
