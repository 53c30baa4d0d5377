"""It validates pacs2xnat.toml with messages that name the file, section and key."""

from __future__ import annotations

import tomllib
from dataclasses import asdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from connectors.app.cli import app
from connectors.config import TEMPLATE, Settings, load_settings, settings_from_dict
from connectors.errors import ConfigError


def test_template_holds_every_default() -> None:
    parsed = settings_from_dict(tomllib.loads(TEMPLATE.read_text()))
    defaults = Settings()
    for section in ("pacs", "xnat", "warehouse", "cycle", "load", "patients"):
        assert asdict(getattr(parsed, section)) == asdict(getattr(defaults, section)), section


def test_init_writes_the_template_and_refuses_to_overwrite(tmp_path: Path) -> None:
    cli = CliRunner()
    target = tmp_path / "pacs2xnat.toml"
    assert cli.invoke(app, ["init", str(target)]).exit_code == 0
    assert target.read_text() == TEMPLATE.read_text()
    res = cli.invoke(app, ["init", str(target)])
    assert res.exit_code == 2
    assert "already exists (use --force to overwrite)" in res.output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[pacs\n", "not valid TOML"),
        ("[pac]\nhost = 'x'\n", "unknown section [pac]"),
        ("[pacs]\nhots = 'x'\n", "[pacs] unknown key 'hots'"),
        ("[pacs]\nport = '4242'\n", "[pacs] port must be a whole number, got '4242'"),
        ("[pacs]\nport = 70000\n", "[pacs] port must be a TCP port (1-65535)"),
        ("[pacs]\nmax_associations = 0\n", "[pacs] max_associations must be greater than 0"),
        (
            "[pacs]\nretrieve = 'c-store'\n",
            "[pacs] retrieve = 'c-store'; must be one of c-get, c-move",
        ),
        ("[pacs]\ncalled_aet = 'A_VERY_LONG_AE_TITLE'\n", "is not a DICOM AE title"),
        ("[xnat]\nurl = 'xnat.local'\n", "[xnat] url must start with http:// or https://"),
        ("[xnat]\npassword = 'hunter2'\n", "secrets never go in the config file"),
        ("[xnat]\nverify_tls = 'yes'\n", "[xnat] verify_tls must be true or false"),
        ("[cycle]\noverlap_days = -1\n", "[cycle] overlap_days must be 0 or more"),
        ("pacs = 1\n", "pacs must be a [pacs] table"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "pacs2xnat.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_settings(cfg)
    assert str(e.value).startswith(str(cfg.resolve()) if "TOML" not in message else str(cfg))
    assert message in str(e.value)
    assert "hunter2" not in str(e.value)


def test_relative_warehouse_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "site" / "pacs2xnat.toml"
    cfg.parent.mkdir()
    cfg.write_text("[warehouse]\npath = 'data/w.duckdb'\n[cycle]\noverlap_days = 7\n")
    s = load_settings(cfg)
    assert s.warehouse_path == cfg.parent.resolve() / "data" / "w.duckdb"
    assert s.cycle.overlap_days == 7


def test_missing_explicit_config_is_exit_2(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["--config", str(tmp_path / "nope.toml"), "build"])
    assert res.exit_code == 2
    assert "nope.toml: config file not found (given with --config)" in res.output
