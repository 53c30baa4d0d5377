"""dbt parses the project once per process and reuses it, until a file of the project changes
(``connectors/warehouse/dbt.py``: ``dbtRunner(manifest=...)``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connectors.warehouse import dbt
from connectors.warehouse.dbt import copy_project, run_dbt
from connectors.warehouse.store import Warehouse

pytestmark = pytest.mark.slow  # four dbt invocations

LS = ["ls", "--resource-type", "model", "--output", "json"]


def test_the_parse_is_reused_until_a_project_file_changes(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "ws")
    warehouse = Warehouse(project / "warehouse" / "pacs2xnat.duckdb")
    warehouse.ensure()
    on = {"project_dir": project, "warehouse_path": warehouse.path}

    first = run_dbt(LS, **on).listed
    assert any(node.endswith(".pacs_query_plan") for node in first)
    (parsed,) = dbt._PARSED.values()
    assert run_dbt(LS, **on).listed == first
    assert next(iter(dbt._PARSED.values())) is parsed  # not parsed again

    probe = project / "models" / "marts" / "zz_probe.sql"
    probe.write_text("select 1 as x\n", encoding="utf-8")
    assert any(node.endswith(".zz_probe") for node in run_dbt(LS, **on).listed)
    assert next(iter(dbt._PARSED.values())) is not parsed

    built = run_dbt(["build", "--select", "zz_probe"], **on)
    assert built.success
    assert any(node.endswith(".zz_probe") for node in built.nodes)
    manifest = json.loads((project / "target" / "manifest.json").read_text(encoding="utf-8"))
    assert any(node.endswith(".zz_probe") for node in manifest["nodes"])  # dbt_graph reads it
    with warehouse.connect(read_only=True) as con:
        assert con.execute("select x from main.zz_probe").fetchall() == [(1,)]
