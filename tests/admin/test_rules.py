"""It merges the INCLUDE/EXCLUDE workbook into the rules seed without losing a decision, and back.

The Python ``normalise_description`` is checked against the dbt macro itself: the macro's SQL is
rendered from ``macros/normalise_description.sql`` and run by DuckDB on the same strings.
"""

from __future__ import annotations

import csv
import datetime as dt
import getpass
import json
import re
from pathlib import Path

import duckdb
import jinja2
import pytest
from openpyxl import load_workbook
from typer.testing import CliRunner

from connectors import PROJECT_ROOT
from connectors.admin.rules_seed import normalise_description, read_seed
from connectors.app.cli import app
from connectors.testbed.cohort import make_cohort
from connectors.testbed.workbooks import rules_from_seed, write_demo_workbooks, write_rules_workbook

SEED = Path("seeds") / "study_description_rules.csv"
TRICKY = [
    "CT  Neck/Chest (contrast)",
    "CT Head & Neck w/ contrast",
    "MRI Neck w/o contrast",
    "MRI neck W/O CONTRAST",
    "w/o w/o",
    "draw/o",
    "w/contrast",
    "PET-CT FDG Skull base–mid thigh",
    "  ",
    "",
    None,
    "CT\tNeck\nChest\r\n",
    "Ünïcödé Çt Séance",
    "ＣＴ Neck (full width)",
    "İstanbul protocol",
    "Straße",
    "ø Ørsted Æsop",
    "C+ Neck",
    "a&b&&c",
    "x² ½ Ⅻ ﬁ",
    "XR Chest P.A.",
    "US  Neck\u00a0nodes",
    '=HYPERLINK("http://x")',
    "OPG/DPT",
]


def macro_sql(column: str) -> str:
    """The body of the dbt macro, rendered for ``column`` exactly as dbt's Jinja would."""
    source = (PROJECT_ROOT / "macros" / "normalise_description.sql").read_text(encoding="utf-8")
    m = re.search(
        r"\{%-?\s*macro normalise_description\((\w+)\)\s*-?%\}(.*?)\{%-?\s*endmacro", source, re.S
    )
    assert m, "macro normalise_description not found"
    # the portable macros it calls (macros/portable.sql), in their DuckDB form
    duckdb_forms = {"strip_accents": lambda e: f"strip_accents({e})"}
    return jinja2.Template(m.group(2)).render({m.group(1): column, **duckdb_forms})


def test_python_normalise_description_agrees_with_the_dbt_macro() -> None:
    """It gives exactly what the macro gives in DuckDB on every tricky string."""
    sql = f"select {macro_sql('s')} from (select cast(? as varchar) as s)"
    with duckdb.connect() as con:
        for text in TRICKY:
            row = con.execute(sql, [text]).fetchone()
            assert row is not None
            assert normalise_description(text) == row[0], text


def test_normalise_description_makes_spelling_variants_equal() -> None:
    """It treats case, punctuation, '&' and 'w/' spellings of one description as the same."""
    assert normalise_description("CT Head & Neck w/ contrast") == normalise_description(
        "ct head and neck with CONTRAST"
    )
    assert normalise_description("PET-CT") == normalise_description("pet ct")
    assert normalise_description("---") is None


def _seed_rows(ws: Path) -> list[dict[str, str]]:
    with open(ws / SEED, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_import_merges_keeps_every_decision_and_reports(workspace: Path, cli: CliRunner) -> None:
    """It adds new rules, keeps old ones as they were, and reports conflicts and absent rules."""
    before = {(r["description"], r["decision"]): r for r in _seed_rows(workspace)}
    include, exclude = rules_from_seed(workspace / SEED)
    kept_include = [d for d, _ in include][1:]  # the first include rule is left out of the book
    wb = write_rules_workbook(
        workspace / "rules.xlsx",
        [*kept_include, "ct neck chest recon", ("CT Neck Chest Recon", "dup spelling")],
        [d for d, _ in exclude] + [("OPG ", "changed my mind"), ("Brain MRI", "unrelated")],
    )
    res = cli.invoke(app, ["--json", "rules", "import", wb.name, "--decided-by", "Dr Fellow"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)

    rows = _seed_rows(workspace)
    after = {(r["description"], r["decision"]): r for r in rows}
    assert set(before) <= set(after)  # nothing dropped
    for key, row in before.items():
        assert after[key] == row  # kept exactly, with who and when
    added = {k: v for k, v in after.items() if k not in before}
    assert set(added) == {
        ("ct neck chest recon", "include"),
        ("OPG", "exclude"),
        ("Brain MRI", "exclude"),
    }
    today = dt.date.today().isoformat()
    assert {(v["decided_on"], v["decided_by"]) for v in added.values()} == {(today, "Dr Fellow")}
    assert after[("Brain MRI", "exclude")]["note"] == "unrelated"
    assert summary["added"] == 3
    assert summary["kept"] == len(before) - 1
    assert summary["duplicates_in_workbook"] == 1
    assert summary["conflicts"] == ["OPG"]
    assert summary["kept_not_in_workbook"] == [f"{include[0][0]} (include)"]
    decisions = [r["decision"] for r in rows]
    assert decisions == sorted(decisions)
    for decision in ("include", "exclude"):
        names = [r["description"].casefold() for r in rows if r["decision"] == decision]
        assert names == sorted(names)


def test_import_twice_changes_nothing_the_second_time(workspace: Path, cli: CliRunner) -> None:
    """It is idempotent: the same workbook again leaves the seed's bytes as they were."""
    wb = write_rules_workbook(workspace / "rules.xlsx", ["CT Larynx"], ["US Thyroid"])
    assert cli.invoke(app, ["rules", "import", wb.name]).exit_code == 0
    first = (workspace / SEED).read_bytes()
    res = cli.invoke(app, ["rules", "import", wb.name])
    assert res.exit_code == 0, res.output
    assert (workspace / SEED).read_bytes() == first
    assert "(unchanged)" in res.output
    added = [r for r in _seed_rows(workspace) if r["description"] == "CT Larynx"]
    assert added[0]["decided_by"] == getpass.getuser()


def test_export_writes_the_workbook_the_team_keeps(workspace: Path, cli: CliRunner) -> None:
    """It writes both sheets with a frozen, filtered header, fitting widths, owner-only."""
    wb_in = write_rules_workbook(workspace / "in.xlsx", [('=HYPERLINK("x")', "odd")], [])
    assert cli.invoke(app, ["rules", "import", wb_in.name, "--decided-by", "admin"]).exit_code == 0
    out = workspace / "out" / "rules.xlsx"
    res = cli.invoke(app, ["--json", "rules", "export", str(out)])
    assert res.exit_code == 0, res.output
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    seed = read_seed(workspace / SEED)

    wb = load_workbook(out)
    assert wb.sheetnames == ["INCLUDE", "EXCLUDE"]
    for name in ("include", "exclude"):
        ws = wb[name.upper()]
        assert [c.value for c in ws[1]] == ["Study Description", "Note", "Decided On", "Decided By"]
        assert ws.freeze_panes == "A2"
        assert ws.auto_filter.ref == f"A1:D{ws.max_row}"
        descriptions = [r[0].value for r in ws.iter_rows(min_row=2)]
        assert sorted(descriptions) == sorted(r.description for r in seed if r.decision == name)
        longest = max(len(d) for d in descriptions)
        assert ws.column_dimensions["A"].width >= min(80, longest)
    injected = next(r for r in wb["INCLUDE"].iter_rows(min_row=2) if r[1].value == "odd")
    assert injected[0].data_type == "s"  # text, never a formula
    assert injected[0].value == '=HYPERLINK("x")'
    assert injected[2].value.date() == dt.date.today()
    assert json.loads(res.output)["include"] == sum(r.decision == "include" for r in seed)


def test_export_then_import_round_trips(workspace: Path, cli: CliRunner) -> None:
    """It reads its own export back without changing a byte of the seed."""
    before = (workspace / SEED).read_bytes()
    assert cli.invoke(app, ["rules", "export", "rules.xlsx"]).exit_code == 0
    res = cli.invoke(app, ["--json", "rules", "import", "rules.xlsx"])
    assert res.exit_code == 0, res.output
    assert (workspace / SEED).read_bytes() == before
    summary = json.loads(res.output)
    assert summary["added"] == 0
    assert summary["kept_not_in_workbook"] == []


def test_export_that_fails_leaves_no_file(workspace: Path, cli: CliRunner) -> None:
    """It leaves neither a half workbook nor a temp file when the final rename fails."""
    target = workspace / "exports" / "rules.xlsx"
    target.mkdir(parents=True)  # a folder where the file should go: os.replace fails
    res = cli.invoke(app, ["rules", "export", str(target)])
    assert res.exit_code == 2
    assert f"Error: {target}: cannot write the workbook here (Is a directory)" in res.output
    assert sorted(p.name for p in target.parent.iterdir()) == ["rules.xlsx"]
    assert target.is_dir()


@pytest.mark.parametrize("name", ["rules.csv", "rules"])
def test_export_refuses_a_name_that_is_not_xlsx(workspace: Path, cli: CliRunner, name: str) -> None:
    """It refuses to write a workbook under a name Excel would not open as one."""
    res = cli.invoke(app, ["rules", "export", name])
    assert res.exit_code == 2
    assert "the rules workbook must be an .xlsx file" in res.output
    assert not (workspace / name).exists()


def test_demo_workbooks_import_with_one_conflict(workspace: Path, cli: CliRunner) -> None:
    """It gives the demo a master list that imports and a rules workbook with one conflict."""
    cohort = make_cohort(12, seed=3, as_of=dt.date(2026, 11, 1))
    files = write_demo_workbooks(cohort, workspace / "inputs", workspace / SEED)
    res = cli.invoke(app, ["--json", "rules", "import", str(files["rules_workbook"])])
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.output)["conflicts"]) == 1
    res = cli.invoke(app, ["--json", "patients", "import", str(files["master_list"])])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["patients"] == 12
