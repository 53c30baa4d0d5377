"""``doctor``'s XNAT checks (``xnat/readiness.py``) against the stand-in: version, the
project's auto-archive setting, the user's groups, and DQR's PACS and receiver."""

from __future__ import annotations

from typing import Any

from connectors.xnat.client import XnatClient
from connectors.xnat.readiness import readiness
from tests.support.xnat_fixtures import xnat_settings


def test_readiness_says_what_a_real_load_needs(standin_xnat_factory: Any) -> None:
    """It passes version, auto-archive and permissions on a ready XNAT; in DQR mode it fails
    without a DQR PACS and with a project that does not auto-archive, and passes with both."""
    bare = standin_xnat_factory(version="1.8.5")
    with XnatClient(xnat_settings(bare)) as client:
        checks = {name: (ok, detail) for name, ok, detail, _ in readiness(client, "direct")}
        assert all(ok for ok, _ in checks.values()), checks
        assert "do not page" in checks["XNAT version"][1]
        dqr = {name: ok for name, ok, _, _ in readiness(client, "dqr")}
        assert not dqr["DQR plugin and receiver"]
    pacs = [{"id": 1, "label": "P", "aeTitle": "P", "host": "127.0.0.1", "queryRetrievePort": 9}]
    ready = standin_xnat_factory(pacs=pacs)
    with XnatClient(xnat_settings(ready)) as client:
        dqr = {name: (ok, detail) for name, ok, detail, _ in readiness(client, "dqr")}
        assert all(ok for ok, _ in dqr.values()), dqr
        assert "XNATDQR:8104" in dqr["DQR plugin and receiver"][1]
        ready.store.prearchive_codes["HNC"] = "0"
        manual = {name: ok for name, ok, _, _ in readiness(client, "dqr")}
        assert not manual["project auto-archive"]
