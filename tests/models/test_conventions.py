"""It keeps the dbt project's conventions true (read from the files, no build needed): every
model documented beside its SQL, contracts on the marts, PII tagged, every unit test described,
every macro documented with its arguments, `data_tests:` never `tests:`.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors import PROJECT_ROOT

MODELS = PROJECT_ROOT / "models"
MACROS = PROJECT_ROOT / "macros"
PII_COLUMNS = {"mrn", "nhs_number", "nhs_numbers", "patient_name", "birth_date", "patient_id"}
MANIFEST_COLUMNS = [
    "accession_number",
    "patient_id",
    "study_date",
    "study_description",
    "study_instance_uid",
    "nhs_number",
    "subject_label",
    "session_label",
    "mrn",
    "modalities_in_study",
    "number_of_study_related_instances",
    "ingest_action",
    "xnat_session_id",
]
#: computed in the SQL (the rest are the selected study's own columns)
MANIFEST_DECISIONS = ["ingest_action", "xnat_session_id"]


def _yaml_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.yml"))


@functools.cache  # read once: the parametrized tests would parse every YAML file each
def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def _models_by_name() -> dict[str, tuple[Path, dict[str, Any]]]:
    out: dict[str, tuple[Path, dict[str, Any]]] = {}
    for path in _yaml_files(MODELS):
        for model in _load(path).get("models", []):
            out[model["name"]] = (path, model)
    return out


def _unit_tests() -> list[dict[str, Any]]:
    return [t for path in _yaml_files(MODELS) for t in _load(path).get("unit_tests", [])]


@pytest.mark.parametrize("sql", sorted(MODELS.rglob("*.sql")), ids=lambda p: p.stem)
def test_every_model_is_documented_beside_its_sql(sql: Path) -> None:
    """It finds each model in a YAML file in the same folder, with a description."""
    models = _models_by_name()
    assert sql.stem in models, f"{sql.stem} has no YAML entry"
    path, model = models[sql.stem]
    assert path.parent == sql.parent
    assert (model.get("description") or "").strip()


@pytest.mark.parametrize(
    "mart", sorted(p.stem for p in (MODELS / "marts").rglob("*.sql")), ids=lambda s: s
)
def test_marts_enforce_a_contract_with_typed_documented_columns(mart: str) -> None:
    """It declares contract enforced on each mart, with a data_type on every column."""
    _, model = _models_by_name()[mart]
    assert model["config"]["contract"]["enforced"] is True
    assert model["columns"]
    for column in model["columns"]:
        assert column.get("data_type"), f"{mart}.{column['name']}"


def test_ingest_manifest_columns_are_the_loader_interface() -> None:
    """It keeps ingest_manifest's columns exactly, in order, in the YAML and in the SQL."""
    _, model = _models_by_name()["ingest_manifest"]
    assert [c["name"] for c in model["columns"]] == MANIFEST_COLUMNS
    sql = (MODELS / "marts" / "ingest" / "ingest_manifest.sql").read_text(encoding="utf-8")
    selected = re.findall(r"^\s+selected\.([a-z_]+),?$", sql, re.M)
    decided = re.findall(r"^\s+end as ([a-z_]+),?$", sql, re.M)
    assert selected + decided == MANIFEST_COLUMNS
    assert decided == MANIFEST_DECISIONS


def test_personal_columns_are_tagged_pii() -> None:
    """It tags every documented personal column (MRN, NHS number, name, birth date) as PII."""
    for name, (_path, model) in _models_by_name().items():
        for column in model.get("columns", []):
            if column["name"] in PII_COLUMNS or column["name"] == "subject_label":
                assert "pii" in (column.get("tags") or []), f"{name}.{column['name']}"


def test_every_unit_test_says_what_it_checks() -> None:
    """It gives every dbt unit test a description and a model that exists."""
    models = _models_by_name()
    tests = _unit_tests()
    assert len(tests) >= 14
    for t in tests:
        assert (t.get("description") or "").strip(), t["name"]
        assert t["model"] in models, t["name"]


def test_the_rules_each_have_a_unit_test() -> None:
    """It has unit tests on every model where a rule of steps 2 and 3 lives."""
    tested = {t["model"] for t in _unit_tests()}
    for model in (
        "int_pacs_studies__deduplicated",
        "int_study_description_rules__normalised",
        "int_pacs_studies__classified",
        "int_master_patients__by_mrn",
        "int_pacs_studies__linked",
        "int_xnat_sessions__current",
        "pacs_study_selection",
        "ingest_manifest",
        "description_triage",
        "linkage_report",
        "stg_spreadsheets__master_patients",
    ):
        assert model in tested, model


def test_yaml_uses_data_tests_never_tests() -> None:
    """It writes data tests under `data_tests:` (dbt 1.8+), never the old `tests:` key."""
    for path in _yaml_files(MODELS) + _yaml_files(PROJECT_ROOT / "seeds"):
        assert not re.search(r"^\s+tests:", path.read_text(encoding="utf-8"), re.M), path


def test_every_macro_is_documented_with_its_arguments() -> None:
    """It documents each macro and generic test in macros/_macros.yml with the arguments its
    signature takes."""
    documented = {m["name"]: m for m in _load(MACROS / "_macros.yml")["macros"]}
    found = 0
    for sql in MACROS.rglob("*.sql"):
        text = sql.read_text(encoding="utf-8")
        for kind, name, args in re.findall(r"{%-?\s*(macro|test)\s+(\w+)\(([^)]*)\)", text):
            found += 1
            key = f"test_{name}" if kind == "test" else name
            assert key in documented, f"{key} ({sql.name}) is not in macros/_macros.yml"
            wanted = [a.split("=")[0].strip() for a in args.split(",") if a.strip()]
            got = [a["name"] for a in documented[key].get("arguments", [])]
            assert got == wanted, key
            assert documented[key]["description"].strip()
    assert found >= 10


def test_singular_tests_live_in_data_tests() -> None:
    """It keeps dbt's singular tests in data-tests/ (mirroring models/), none in tests/."""
    assert not list((PROJECT_ROOT / "tests").rglob("*.sql"))
    singular = list((PROJECT_ROOT / "data-tests").rglob("*.sql"))
    assert singular
    for sql in singular:
        assert sql.relative_to(PROJECT_ROOT / "data-tests").parts[0] in {
            "staging",
            "intermediate",
            "marts",
            "macros",
        }
