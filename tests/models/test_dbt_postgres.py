"""The whole dbt project (seeds, models, every data and unit test, the contracts) builds on a
real PostgreSQL with warnings as errors, from raw tables made by our own DDL and filled the
way the connectors fill them, and every mart holds what the same build on DuckDB holds."""

from __future__ import annotations

import datetime as dt
import decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors import PROJECT_ROOT
from connectors.testbed.cohort import make_cohort
from connectors.warehouse.dbt import copy_project, run_dbt
from connectors.warehouse.postgres import PostgresWarehouse
from connectors.warehouse.store import Warehouse
from tests.support.cohort_warehouse import AS_OF, BUILD_ARGS, load_cohort

#: PostgreSQL's identifier limit: a unit test's name becomes a relation name there
MAX_IDENTIFIER = 63


def _marts(warehouse: Warehouse) -> list[str]:
    with warehouse.connect(read_only=True) as con:
        rows = con.execute(
            "select table_name from information_schema.tables "
            "where table_schema = 'main' and table_type in ('BASE TABLE', 'VIEW') "
            "order by table_name"
        ).fetchall()
    return [r[0] for r in rows]


def _comparable(value: Any) -> Any:
    if isinstance(value, decimal.Decimal | float):
        return round(float(value), 6)
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None)
    if isinstance(value, list | tuple):
        return tuple(_comparable(v) for v in value)
    return value


def _rows(warehouse: Warehouse, relation: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    cols, rows = warehouse.read_table(relation)
    return cols, sorted(
        (tuple(_comparable(v) for v in r) for r in rows),
        key=lambda r: tuple((v is None, str(v)) for v in r),
    )


def test_unit_test_names_fit_postgresql_identifiers() -> None:
    """It keeps every unit test's name within 63 characters (PostgreSQL truncates nothing:
    a longer one cannot run there)."""
    names = _unit_test_names()
    assert names
    assert [n for n in names if len(n) > MAX_IDENTIFIER] == []


@pytest.mark.slow
def test_the_project_builds_on_postgresql_and_matches_duckdb(tmp_path: Path, pg_url: str) -> None:
    """It runs `dbt --warn-error build` (every unit test, data test and contract) on
    PostgreSQL, and each mart then holds the rows the same models build on DuckDB."""
    cohort = make_cohort(40, seed=7, as_of=AS_OF)
    project = copy_project(tmp_path / "project")
    pg = PostgresWarehouse(pg_url)
    pg.ensure()
    load_cohort(pg, cohort)
    result = run_dbt(
        [*BUILD_ARGS, "--threads", "4"],
        project_dir=project,
        warehouse_path=tmp_path / "unused.duckdb",
        warehouse_url=pg_url,
    )
    assert result.success, result.failures
    assert set(result.counts) <= {"success", "pass"}, result.counts
    assert result.counts["pass"] >= len(_unit_test_names()) > 30

    duck = Warehouse(tmp_path / "duck" / "pacs2xnat.duckdb")
    duck.ensure()
    load_cohort(duck, cohort)
    models_only = run_dbt(
        [*BUILD_ARGS, "--exclude-resource-type", "test", "unit_test"],
        project_dir=copy_project(tmp_path / "duck_project"),
        warehouse_path=duck.path,
    )
    assert models_only.success, models_only.failures

    marts = _marts(duck)
    assert _marts(pg) == marts
    assert {"ingest_manifest", "data_availability", "reconciliation"} <= set(marts)
    for mart in marts:
        assert _rows(pg, f"main.{mart}") == _rows(duck, f"main.{mart}"), mart
    assert len(pg.read_relation("main.ingest_manifest")) > 20


def _unit_test_names() -> list[str]:
    return [
        t["name"]
        for path in (PROJECT_ROOT / "models").rglob("*.yml")
        for t in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("unit_tests", [])
    ]
