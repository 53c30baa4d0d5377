"""Telling people: an e-mail and/or a webhook when a ``run`` or ``load`` finishes, stops on a
fault, or pauses outside the PACS windows (``[notify]``).

A message holds counts and reasons only (``message``): studies loaded, already in XNAT, failed
by reason category, patients queried, the pause's end, how often the throttle changed, the run
id. Never a patient identifier, name, accession number or Study UID: the counts are read from a
fixed list of keys, a fault is named by its kind (``FAULTS``), never by its message.

- E-mail: ``smtp_host``/``smtp_port``, STARTTLS (``smtp_starttls``, certificates checked against
  the system's store or ``$SSL_CERT_FILE``), a login when ``SMTP_USER``/``SMTP_PASS`` are set in
  the environment; from ``mail_from`` to every ``mail_to``.
- Webhook: a JSON POST to ``$NOTIFY_WEBHOOK_URL`` (such URLs carry their secret) or
  ``webhook_url``: ``{"title", "text", "pacs2xnat": {...}}``; ``text`` is what Slack's and Teams'
  incoming webhooks show.

Sending never fails the command: an error is logged and the command goes on.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import smtplib
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import requests

from connectors import windows
from connectors.config import NotifyConfig, Settings
from connectors.errors import (
    ConfigError,
    InputError,
    Pacs2XnatError,
    PacsUnreachable,
    StepFailed,
    WarehouseBusy,
    XnatUnreachable,
)

logger = logging.getLogger(__name__)

WEBHOOK_ENV = "NOTIFY_WEBHOOK_URL"
COMMANDS = ("load", "run")
#: The only values a message reports: counts (and the throughput), by the summary's key.
COUNTS: dict[str, str] = {
    "patients_queried": "patients queried",
    "patients_failed": "patients whose query failed",
    "studies_found": "studies found on the PACS",
    "studies": "studies to load",
    "loaded": "studies loaded",
    "already_present": "studies already in XNAT",
    "failed": "studies failed",
    "not_started": "studies left for the next window",
    "mb_per_s": "MB/s",
}
#: A fault is named by its kind, never by its message (which may name a session).
FAULTS: tuple[tuple[type[Pacs2XnatError], str], ...] = (
    (PacsUnreachable, "the PACS could not be reached or refused us"),
    (XnatUnreachable, "XNAT could not be reached or refused us"),
    (WarehouseBusy, "the warehouse is busy (another pacs2xnat is writing)"),
    (StepFailed, "a step of the cycle failed"),
    (ConfigError, "the configuration is invalid"),
    (InputError, "an input file is invalid"),
)


def fault_reason(error: BaseException) -> str:
    for cls, phrase in FAULTS:
        if isinstance(error, cls):
            return phrase
    return f"an unexpected error ({type(error).__name__})"


def _counts(summary: dict[str, Any]) -> dict[str, Any]:
    """The counts of a load's or a run's summary (a run: its query and load steps)."""
    parts = [summary]
    steps = summary.get("steps")
    if isinstance(steps, dict):
        parts = [steps.get("query") or {}, steps.get("load") or {}, summary]
    out: dict[str, Any] = {}
    for part in parts:
        for key in COUNTS:
            if isinstance(part.get(key), int | float) and not isinstance(part.get(key), bool):
                out[key] = part[key]
        reasons = part.get("failed_by_reason")
        if isinstance(reasons, dict) and reasons:
            out["failed_by_reason"] = {str(k): int(v) for k, v in reasons.items()}
        changes = part.get("throttle_changes")
        if isinstance(changes, list) and changes:
            out["throttle_changes"] = len(changes)
    return out


def message(
    command: str,
    run_id: str,
    event: str,
    summary: dict[str, Any],
    *,
    reason: str | None = None,
    paused_until: str | None = None,
) -> tuple[str, str, dict[str, Any]]:
    """(title, text, facts) of one notification; ``event`` is finished, stopped or paused."""
    counts = _counts(summary)
    if event == "paused":
        title = f"pacs2xnat {command} paused until {paused_until} (outside the PACS windows)"
    elif event == "stopped":
        title = f"pacs2xnat {command} stopped: {reason}"
    else:
        done = ", ".join(f"{counts[k]} {COUNTS[k]}" for k in ("loaded", "failed") if k in counts)
        title = f"pacs2xnat {command} finished" + (f": {done}" if done else "")
    lines = [title, "", f"run {run_id}"]
    lines += [f"{COUNTS[k]}: {v}" for k, v in counts.items() if k in COUNTS]
    for category, n in counts.get("failed_by_reason", {}).items():
        lines.append(f"failed as {category}: {n}")
    if "throttle_changes" in counts:
        lines.append(f"PACS throttle changes: {counts['throttle_changes']}")
    if paused_until:
        lines.append(f"paused until {paused_until}")
    lines.append("details: pacs2xnat failures, and the run's log in the warehouse folder")
    facts = {"command": command, "run_id": run_id, "event": event, "reason": reason,
             "paused_until": paused_until, **counts}  # fmt: skip
    return title, "\n".join(lines), facts


def send(cfg: NotifyConfig, title: str, text: str, facts: dict[str, Any]) -> list[str]:
    """Send by every configured channel; the channels that failed (logged, never raised)."""
    failed = []
    url = os.environ.get(WEBHOOK_ENV, "").strip() or cfg.webhook_url
    if url:
        try:
            body: dict[str, Any] = {"title": title, "text": text, "pacs2xnat": facts}
            r = requests.post(url, json=body, timeout=cfg.timeout)
            if r.status_code >= 300:
                raise OSError(f"HTTP {r.status_code}")
        except (OSError, requests.RequestException) as e:
            logger.warning("the webhook notification failed: %s", type(e).__name__)
            failed.append("webhook")
    if cfg.smtp_host:
        try:
            _mail(cfg, title, text)
        except (OSError, smtplib.SMTPException, ssl.SSLError) as e:
            logger.warning("the e-mail notification failed: %s: %s", type(e).__name__, e)
            failed.append("email")
    return failed


def _mail(cfg: NotifyConfig, title: str, text: str) -> None:
    if not cfg.mail_to:
        raise smtplib.SMTPException("[notify] mail_to is empty")
    msg = EmailMessage()
    msg["Subject"] = title
    msg["From"] = cfg.mail_from or f"pacs2xnat@{cfg.smtp_host}"
    msg["To"] = ", ".join(cfg.mail_to)
    msg.set_content(text)
    with smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=cfg.timeout) as smtp:
        smtp.ehlo()
        if cfg.smtp_starttls:
            smtp.starttls(context=ssl.create_default_context())
            smtp.ehlo()
        user, password = os.environ.get("SMTP_USER", ""), os.environ.get("SMTP_PASS", "")
        if user:
            smtp.login(user, password)
        smtp.send_message(msg)


def configured(cfg: NotifyConfig) -> bool:
    return bool(cfg.smtp_host or cfg.webhook_url or os.environ.get(WEBHOOK_ENV, "").strip())


@dataclass
class Notifier:
    """One command's notifications; a no-op for other commands or without ``[notify]``."""

    settings: Settings
    command: str
    run_id: str
    active: bool = False
    fault: BaseException | None = None
    sent: list[str] = field(default_factory=list)  # the titles sent (tests, the log)

    @classmethod
    def for_command(cls, settings: Settings, command: str, run_id: str) -> Notifier:
        active = command in COMMANDS and configured(settings.notify)
        return cls(settings, command, run_id, active)

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """While the command runs: a pause is told at once; a fault is kept for the end."""
        if not self.active:
            yield
            return
        with windows.listening(self._paused):
            try:
                yield
            except BaseException as e:
                self.fault = e
                raise

    def _paused(self, until: dt.datetime, wait: bool) -> None:
        when = until.isoformat(sep=" ", timespec="minutes")
        self._send("paused", {}, paused_until=when)

    def finished(self, exit_code: int, summary: dict[str, Any]) -> None:
        """At the end: finished (with counts), stopped (on a fault) or paused (--no-wait)."""
        if not self.active:
            return
        if self.fault is not None or exit_code not in (0, 1):
            reason = fault_reason(self.fault) if self.fault else f"exit code {exit_code}"
            self._send("stopped", summary, reason=reason)
        elif summary.get("paused_until"):
            return  # told when the pause began
        else:
            self._send("finished", summary)

    def _send(self, event: str, summary: dict[str, Any], **kw: Any) -> None:
        try:
            title, text, facts = message(self.command, self.run_id, event, summary, **kw)
            send(self.settings.notify, title, text, facts)
            self.sent.append(title)
        except Exception:  # a notification never fails the command
            logger.exception("a notification could not be prepared")
