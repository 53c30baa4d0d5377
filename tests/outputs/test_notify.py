"""``[notify]``: a real local SMTP server (aiosmtpd, STARTTLS with a self-signed certificate
made by openssl, a login from SMTP_USER/SMTP_PASS) and a local webhook receiver, told by real
``load`` invocations (the CLI's ``invocation``) against the in-process PACS and the stand-in
XNAT: when the load finishes, stops on a fault, or pauses outside the PACS windows. Every
message is searched for every identifier of the cohort and holds none; a notification that
cannot be sent never fails the load."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import subprocess
import threading
from collections.abc import Iterator
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import typer
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from connectors.app.invocation import invocation, state
from connectors.clock import use_clock
from connectors.config import NotifyConfig, Settings
from connectors.load.runner import run_load
from connectors.testbed.cohort import Cohort
from connectors.testbed.orthanc import free_port
from connectors.testbed.pacs_scp import DemoPacs
from tests.support.fake_clock import FakeClock
from tests.support.load_helpers import load_settings_for, pick_studies, write_manifest
from tests.support.xnat_fixtures import StandinHandle

SMTP_USER, SMTP_PASS = "loader", "s3cret-smtp"


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.logins: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.original_content or envelope.content)
        return "250 OK"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            SMTP_USER.encode(),
            SMTP_PASS.encode(),
        )
        if ok:
            self.logins.append(data.login)
        return AuthResult(success=ok)


@pytest.fixture
def smtp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[_Mailbox, int]]:
    """aiosmtpd requiring STARTTLS and a login; our client trusts its certificate through
    $SSL_CERT_FILE, as a hospital's CA would be trusted."""
    import ssl

    cert, key = tmp_path / "smtp.pem", tmp_path / "smtp.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    monkeypatch.setenv("SMTP_USER", SMTP_USER)
    monkeypatch.setenv("SMTP_PASS", SMTP_PASS)
    box = _Mailbox()
    port = free_port()
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=port,
        tls_context=tls,
        require_starttls=True,
        authenticator=box.authenticate,
        auth_required=True,
    )
    controller.start()
    yield box, port
    controller.stop()


class _Hook(BaseHTTPRequestHandler):
    bodies: list[dict[str, Any]]
    status = 200

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        self.bodies.append(json.loads(self.rfile.read(n)))
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[type[_Hook], str]]:
    handler = type("Hook", (_Hook,), {"bodies": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield handler, f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


def _with_notify(settings: Settings, **notify: Any) -> Settings:
    return dataclasses.replace(settings, notify=NotifyConfig(**notify))


def _invoke_load(settings: Settings) -> int:
    """``pacs2xnat load`` as the CLI runs it (one invocation: run record, exit codes, notify),
    reading the manifest as written."""
    state.settings, state.config_path = settings, None
    try:
        with invocation("load") as rc:
            rc.summary.update(run_load(rc, "direct", sync_first=False, build_manifest=False))
    except typer.Exit as e:
        return int(e.exit_code)
    finally:
        state.settings = None
    return 0


def _texts(box: _Mailbox, hook: type[_Hook]) -> list[str]:
    mails = [message_from_bytes(m) for m in box.messages]
    out = [f"{m['Subject']}\n{m.get_payload()}" for m in mails]
    return out + [json.dumps(b) for b in hook.bodies]


def _assert_no_identifiers(texts: list[str], cohort: Cohort) -> None:
    """No MRN, NHS number, name, birth date, accession number or Study UID in any message."""
    words: set[str] = set()
    for p in cohort.patients:
        words |= {p.mrn, p.family, p.given, p.dicom_name, p.list_name, p.birth_date.isoformat()}
        words |= {p.birth_date.strftime("%Y%m%d"), p.nhs_number or ""}
    for s in cohort.studies:
        words |= {s.accession_number, s.study_instance_uid}
    words = {w for w in words if len(w) >= 4}
    assert words
    for text in texts:
        found = sorted(w for w in words if w.lower() in text.lower())
        assert found == [], (found, text)


def test_a_finished_load_is_told_by_mail_and_webhook_without_identifiers(
    pacs_dicom_folder: Path,
    pacs_cohort: Cohort,
    standin_xnat: StandinHandle,
    tmp_path: Path,
    smtp: tuple[_Mailbox, int],
    webhook: tuple[type[_Hook], str],
) -> None:
    box, port = smtp
    hook, url = webhook
    studies = pick_studies(pacs_cohort, 3)
    with DemoPacs(pacs_dicom_folder) as pacs:
        settings = load_settings_for(tmp_path, pacs, standin_xnat, pacs={"max_associations": 1})
        settings = _with_notify(
            settings, smtp_host="127.0.0.1", smtp_port=port, mail_from="loader@example.org",
            mail_to=("imaging-team@example.org",), webhook_url=url,
        )  # fmt: skip
        write_manifest(settings, pacs_cohort, studies)
        assert _invoke_load(settings) == 0
    assert box.logins == [SMTP_USER.encode()]  # logged in, after STARTTLS (aiosmtpd insists)
    (mail,) = [message_from_bytes(m) for m in box.messages]
    assert mail["Subject"] == "pacs2xnat load finished: 3 studies loaded, 0 studies failed"
    assert mail["To"] == "imaging-team@example.org"
    assert "studies loaded: 3" in str(mail.get_payload())
    (body,) = hook.bodies
    assert body["title"] == mail["Subject"]
    assert "studies loaded: 3" in body["text"]
    assert (body["pacs2xnat"]["event"], body["pacs2xnat"]["loaded"]) == ("finished", 3)
    _assert_no_identifiers(_texts(box, hook), pacs_cohort)


def test_a_fault_and_a_pause_are_told_and_a_failing_channel_never_fails_the_load(
    pacs_cohort: Cohort,
    standin_xnat: StandinHandle,
    tmp_path: Path,
    webhook: tuple[type[_Hook], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """XNAT refusing us: 'stopped' with the kind of fault. Outside the windows with --no-wait: one
    'paused until' message (the PACS is never asked: nothing listens on its port). With the
    webhook answering 500 and no SMTP server the load still ends well, the failures logged."""
    hook, url = webhook
    dead_pacs = DemoPacs(port=free_port())  # never started
    studies = pick_studies(pacs_cohort, 2)
    settings = load_settings_for(tmp_path, dead_pacs, standin_xnat)
    settings = _with_notify(settings, webhook_url=url)
    write_manifest(settings, pacs_cohort, studies)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XNAT_PASS", "not-the-password")  # XNAT refuses us: exit 3
        assert _invoke_load(settings) == 3
    assert hook.bodies[-1]["title"] == (
        "pacs2xnat load stopped: XNAT could not be reached or refused us"
    )

    closed = dataclasses.replace(
        settings,
        pacs=dataclasses.replace(
            settings.pacs, windows=("Mon-Fri 19:00-07:00",), wait_for_window=False
        ),
    )
    with use_clock(FakeClock(dt.datetime(2026, 12, 1, 12, 0))):
        assert _invoke_load(closed) == 0
    assert [b["pacs2xnat"]["event"] for b in hook.bodies] == ["stopped", "paused"]
    assert hook.bodies[-1]["title"] == (
        "pacs2xnat load paused until 2026-12-01 19:00 (outside the PACS windows)"
    )
    _assert_no_identifiers(_texts(_Mailbox(), hook), pacs_cohort)

    hook.status = 500
    failing = _with_notify(
        closed, webhook_url=url, smtp_host="127.0.0.1", smtp_port=free_port(),
        mail_to=("team@example.org",),
    )  # fmt: skip
    with use_clock(FakeClock(dt.datetime(2026, 12, 1, 12, 0))):
        assert _invoke_load(failing) == 0
    logged = [r.getMessage() for r in caplog.records]
    assert any("the webhook notification failed" in m for m in logged)
    assert any("the e-mail notification failed" in m for m in logged)
