"""``pacs2xnat.toml``: found, parsed, validated, with an embedded default for every setting.

Found as ``--config PATH``, else ``$PACS2XNAT_CONFIG``, else ``./pacs2xnat.toml``; with none of
them the embedded defaults apply. Unknown keys, wrong types and impossible values are a
``ConfigError`` naming the file, the section and the key. Secrets never live here: XNAT
credentials come from ``XNAT_USER``/``XNAT_PASS`` or ``~/.netrc`` (``xnat/client.py``).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from connectors import PROJECT_ROOT
from connectors.errors import ConfigError

CONFIG_ENV = "PACS2XNAT_CONFIG"
DEFAULT_CONFIG_NAME = "pacs2xnat.toml"


@dataclass(frozen=True)
class PacsConfig:
    host: str = "127.0.0.1"
    port: int = 4242
    called_aet: str = "ORTHANC"
    calling_aet: str = "PACS2XNAT"
    retrieve: str = "c-get"
    retrieve_backend: str = "pynetdicom"
    query_backend: str = "pynetdicom"  # or "dcmtk": C-FINDs by dcmtk's findscu (find_dcmtk.py)
    move_destination: str = ""
    receive_port: int = 11113
    max_associations: int = 2
    find_result_cap: int = 0
    acse_timeout: float = 30.0
    dimse_timeout: float = 120.0
    network_timeout: float = 120.0
    retries: int = 3
    # issue 15: off-peak windows (connectors/windows.py), throttles (load/throttle.py)
    windows: tuple[str, ...] = ()
    wait_for_window: bool = True  # false (or --no-wait): outside a window, stop instead
    max_mb_per_second: float = 0.0
    max_studies_per_hour: int = 0
    adaptive: bool = True
    backoff_pause_seconds: float = 60.0
    protocol: str = "dimse"  # or "dicomweb": QIDO-RS and WADO-RS on dicomweb_url
    dicomweb_url: str = ""


@dataclass(frozen=True)
class XnatConfig:
    url: str = "http://127.0.0.1:8080"
    project: str = "HNC"
    mode: str = "direct"
    dqr_pacs: str = ""
    verify_tls: bool = True
    timeout: float = 300.0
    dqr_poll_seconds: float = 5.0
    dqr_stall_timeout: float = 900.0
    archive_wait: float = 3600.0
    archive_poll_seconds: float = 5.0
    dqr_ae_title: str = ""
    dqr_port: int = 0
    dqr_in_flight: int = 1


@dataclass(frozen=True)
class WarehouseConfig:
    path: str = "warehouse/pacs2xnat.duckdb"
    #: the shared warehouse on PostgreSQL, "postgresql://host:port/db"; empty: the DuckDB file
    url: str = ""


@dataclass(frozen=True)
class CycleConfig:
    overlap_days: int = 14


@dataclass(frozen=True)
class LoadConfig:
    work_dir: str = ""
    queue_size: int = 2
    uploads_in_flight: int = 2  # studies uploaded to XNAT at once (direct mode)
    retries: int = 3
    backoff_seconds: float = 2.0
    manifest_refresh_seconds: float = 60.0  # the loader reads the manifest again this often


@dataclass(frozen=True)
class PatientsConfig:
    mrn_width: int = 0


@dataclass(frozen=True)
class NotifyConfig:
    """issue 15: who is told when a run/load finishes, stops on a fault or pauses
    (``outputs/notify.py``); SMTP_USER / SMTP_PASS and NOTIFY_WEBHOOK_URL from the environment."""

    smtp_host: str = ""
    smtp_port: int = 587
    smtp_starttls: bool = True
    mail_from: str = ""
    mail_to: tuple[str, ...] = ()
    webhook_url: str = ""
    timeout: float = 10.0


CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("pacs", "retrieve"): ("c-get", "c-move"),
    ("pacs", "retrieve_backend"): ("pynetdicom", "dcmtk"),
    ("pacs", "query_backend"): ("pynetdicom", "dcmtk"),
    ("xnat", "mode"): ("direct", "dqr"),
    ("pacs", "protocol"): ("dimse", "dicomweb"),
}
POSITIVE: set[tuple[str, str]] = {
    ("pacs", "port"),
    ("pacs", "receive_port"),
    ("pacs", "max_associations"),
    ("pacs", "acse_timeout"),
    ("pacs", "dimse_timeout"),
    ("pacs", "network_timeout"),
    ("xnat", "timeout"),
    ("xnat", "dqr_poll_seconds"),
    ("xnat", "dqr_stall_timeout"),
    ("xnat", "archive_wait"),
    ("xnat", "archive_poll_seconds"),
    ("xnat", "dqr_in_flight"),
    ("load", "queue_size"),
    ("load", "uploads_in_flight"),
}
NON_NEGATIVE: set[tuple[str, str]] = {
    ("pacs", "find_result_cap"),
    ("pacs", "retries"),
    ("cycle", "overlap_days"),
    ("load", "retries"),
    ("load", "backoff_seconds"),
    ("load", "manifest_refresh_seconds"),
    ("xnat", "dqr_port"),
    ("patients", "mrn_width"),
    ("pacs", "max_mb_per_second"),
    ("pacs", "max_studies_per_hour"),
    ("pacs", "backoff_pause_seconds"),
}
POSITIVE |= {("notify", "smtp_port"), ("notify", "timeout")}


@dataclass(frozen=True)
class Settings:
    """The whole configuration, plus where it came from (``source``) and the dbt project."""

    pacs: PacsConfig = field(default_factory=PacsConfig)
    xnat: XnatConfig = field(default_factory=XnatConfig)
    warehouse: WarehouseConfig = field(default_factory=WarehouseConfig)
    cycle: CycleConfig = field(default_factory=CycleConfig)
    load: LoadConfig = field(default_factory=LoadConfig)
    patients: PatientsConfig = field(default_factory=PatientsConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    source: Path | None = None
    base_dir: Path = field(default_factory=Path.cwd)

    @property
    def warehouse_path(self) -> Path:
        """The DuckDB file; a relative path is relative to the config file's folder."""
        p = Path(self.warehouse.path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    @property
    def warehouse_dir(self) -> Path:
        """Everything with patient data lives here: the DuckDB file, logs, exports, reports."""
        return self.warehouse_path.parent

    @property
    def work_dir(self) -> Path:
        """Scratch space for retrieved DICOM (owner-only; emptied after a verified upload)."""
        if self.load.work_dir:
            p = Path(self.load.work_dir).expanduser()
            return p if p.is_absolute() else self.base_dir / p
        return self.warehouse_dir / "work"

    @property
    def project_dir(self) -> Path:
        """The dbt project: the config file's folder when it holds one, else the shipped one."""
        if (self.base_dir / "dbt_project.yml").is_file():
            return self.base_dir
        return PROJECT_ROOT

    def public_dict(self) -> dict[str, Any]:
        """The effective settings, for the debug log and the runs table (no secrets live here)."""
        out: dict[str, Any] = {s: asdict(getattr(self, s)) for s in SECTIONS}
        out["source"] = str(self.source) if self.source else None
        return out


SECTIONS: dict[str, type] = {
    "pacs": PacsConfig,
    "xnat": XnatConfig,
    "warehouse": WarehouseConfig,
    "cycle": CycleConfig,
    "load": LoadConfig,
    "patients": PatientsConfig,
    "notify": NotifyConfig,
}
SECRET_WORDS = ("password", "pass", "secret", "token")


TEMPLATE = Path(__file__).with_name("pacs2xnat.example.toml")


def write_template(path: Path, *, force: bool = False) -> Path:
    """Write the commented template (every key at its default); never overwrite unasked."""
    if path.exists() and not force:
        raise ConfigError(f"{path}: already exists (use --force to overwrite)")
    text = TEMPLATE.read_text(encoding="utf-8")
    settings_from_dict(tomllib.loads(text), source=path)  # the template must stay valid
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def find_config_file(explicit: Path | None) -> Path | None:
    """``--config`` wins, then ``$PACS2XNAT_CONFIG``, then ``./pacs2xnat.toml`` if it exists."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"{explicit}: config file not found (given with --config)")
        return explicit
    env = os.environ.get(CONFIG_ENV)
    if env:
        p = Path(env)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found (given by ${CONFIG_ENV})")
        return p
    local = Path.cwd() / DEFAULT_CONFIG_NAME
    return local if local.is_file() else None


def load_settings(explicit: Path | None = None) -> Settings:
    """Find and validate the configuration; embedded defaults when there is no file."""
    path = find_config_file(explicit)
    if path is None:
        return Settings(base_dir=Path.cwd())
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return settings_from_dict(data, source=path.resolve())


def settings_from_dict(data: dict[str, Any], source: Path | None = None) -> Settings:
    """Validate a parsed TOML document section by section and key by key."""
    where = str(source) if source else "config"
    sections: dict[str, Any] = {}
    for name, value in data.items():
        if name not in SECTIONS:
            raise ConfigError(
                f"{where}: unknown section [{name}] (known: {', '.join(sorted(SECTIONS))})"
            )
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {name} must be a [{name}] table")
        sections[name] = _section(where, name, SECTIONS[name], value)
    base = source.parent if source else Path.cwd()
    return Settings(**sections, source=source, base_dir=base)


def _section(where: str, name: str, cls: type, values: dict[str, Any]) -> Any:
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if any(w in key.lower() for w in SECRET_WORDS):
            raise ConfigError(
                f"{where}: [{name}] {key}: secrets never go in the config file; "
                "set XNAT_USER / XNAT_PASS in the environment or use ~/.netrc"
            )
        if key not in known:
            raise ConfigError(
                f"{where}: [{name}] unknown key {key!r} (known: {', '.join(sorted(known))})"
            )
        kwargs[key] = _check_type(where, name, key, known[key].type, value)
        _check_value(where, name, key, kwargs[key])
    return cls(**kwargs)


def _check_type(where: str, section: str, key: str, typ: Any, value: Any) -> Any:
    if str(typ) == "tuple[str, ...]":  # a list of strings (e.g. [pacs] windows)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(
                f"{where}: [{section}] {key} must be a list of strings, got {value!r}"
            )
        return tuple(value)
    expected = {"str": str, "int": int, "float": float, "bool": bool}[str(typ)]
    ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        kind = {str: "a string", int: "a whole number", float: "a number", bool: "true or false"}
        raise ConfigError(f"{where}: [{section}] {key} must be {kind[expected]}, got {value!r}")
    return value


def _check_value(where: str, section: str, key: str, value: Any) -> None:
    choices = CHOICES.get((section, key))
    if choices and value not in choices:
        raise ConfigError(
            f"{where}: [{section}] {key} = {value!r}; must be one of {', '.join(choices)}"
        )
    if (section, key) in POSITIVE and value <= 0:
        raise ConfigError(f"{where}: [{section}] {key} must be greater than 0, got {value!r}")
    if (section, key) in NON_NEGATIVE and value < 0:
        raise ConfigError(f"{where}: [{section}] {key} must be 0 or more, got {value!r}")
    if section == "pacs" and key in {"port", "receive_port"} and value > 65535:
        raise ConfigError(f"{where}: [{section}] {key} must be a TCP port (1-65535)")
    is_aet = section == "pacs" and key in {"called_aet", "calling_aet", "move_destination"}
    if is_aet and (len(value) > 16 or "\\" in value):
        raise ConfigError(
            f"{where}: [{section}] {key} = {value!r} is not a DICOM AE title "
            "(at most 16 characters, no backslash)"
        )
    if (section, key) == ("pacs", "windows"):
        from connectors.windows import parse_windows

        parse_windows(value, where)
    is_web_url = (section, key) == ("pacs", "dicomweb_url") and value
    if is_web_url and not value.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: [pacs] dicomweb_url must start with http:// or https://")
    if is_web_url and "@" in value.split("/")[2]:
        raise ConfigError(
            f"{where}: [pacs] dicomweb_url: credentials never go in the URL; set "
            "DICOMWEB_USER / DICOMWEB_PASS or DICOMWEB_TOKEN in the environment"
        )
    if section == "notify":
        _check_notify(where, key, value)
    if section == "xnat" and key == "url" and not value.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: [xnat] url must start with http:// or https://")
    if section == "warehouse" and key == "url" and value:
        check_postgres_url(value, f"{where}: [warehouse] url")


def _check_notify(where: str, key: str, value: Any) -> None:
    if key == "mail_to" and not all("@" in v for v in value):
        raise ConfigError(f"{where}: [notify] mail_to: every entry must be an e-mail address")
    if key == "mail_from" and value and "@" not in value:
        raise ConfigError(f"{where}: [notify] mail_from = {value!r} is not an e-mail address")
    if key == "webhook_url" and value and not value.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: [notify] webhook_url must start with http:// or https://")


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def check_postgres_url(url: str, where: str = "[warehouse] url") -> str:
    """A ``postgresql://[user@]host[:port]/database`` URL without a password (libpq takes it
    from ``$PGPASSWORD`` or ``~/.pgpass``); ``ConfigError`` naming ``where`` otherwise."""
    if not url.startswith(POSTGRES_SCHEMES):
        raise ConfigError(f"{where}: must start with postgresql:// (postgresql://host:port/db)")
    parts = urlsplit(url)
    if parts.password is not None:
        raise ConfigError(
            f"{where}: a password never goes in the URL or the config file; "
            "set PGPASSWORD in the environment or use ~/.pgpass"
        )
    if not parts.hostname or not parts.path.strip("/"):
        raise ConfigError(f"{where}: must name a host and a database (postgresql://host/db)")
    try:
        _ = parts.port
    except ValueError:
        raise ConfigError(f"{where}: the port is not a number") from None
    return url
