"""XNAT: log in, read the project's sessions, create subjects, upload, verify, DQR requests.

``xnat.connect`` (xnatpy) does the login, the JSESSION cookie, its keep-alive and TLS settings;
the same ``requests`` session (``session.interface``, so the same cookies and ``verify``) is
used for the calls xnatpy cannot make or makes too slowly, each one saying why. Every
``xnat.*`` and ``requests.*`` exception becomes ours here: a failure of the service as a whole is
``XnatUnreachable`` (exit 3); a failure of one study is ``StudyFailed`` with its reason category.
Credentials: ``XNAT_USER``/``XNAT_PASS``, else ``~/.netrc`` for the host; never logged.
"""

from __future__ import annotations

import logging
import netrc
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import requests

from connectors.config import Settings
from connectors.errors import ConfigError, StudyFailed, XnatUnreachable
from connectors.seams import xnatpy_session
from connectors.xnat.dqr import DqrCalls
from connectors.xnat.labels import xnat_label
from connectors.xnat.reads import IMAGE_SESSION, PAGE_SIZE, SESSION_COLUMNS, SessionReads

__all__ = [
    "IMAGE_SESSION",
    "PAGE_SIZE",
    "SESSION_COLUMNS",
    "XnatClient",
    "classify",
    "credentials",
    "xnat_label",
]

logger = logging.getLogger(__name__)

GET_RETRIES = 2


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str = field(repr=False)
    source: str = "environment"


def credentials(url: str) -> Credentials:
    """``XNAT_USER``/``XNAT_PASS``, else ``~/.netrc`` for the URL's host; else ``ConfigError``."""
    user, password = os.environ.get("XNAT_USER"), os.environ.get("XNAT_PASS")
    if user and password:
        return Credentials(user, password)
    if user or password:
        raise ConfigError("set both XNAT_USER and XNAT_PASS (or neither, and use ~/.netrc)")
    host = urlparse(url).hostname or ""
    try:
        found = netrc.netrc().authenticators(host)
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        found = None
    if found and found[0] and found[2]:
        return Credentials(found[0], found[2], "~/.netrc")
    raise ConfigError(
        f"no XNAT credentials for {host}: set XNAT_USER and XNAT_PASS in the environment, "
        f"or add 'machine {host} login USER password PASS' to ~/.netrc (mode 600)"
    )


def _short(text: str, limit: int = 200) -> str:
    plain = re.sub(r"<[^>]+>", " ", text or "")
    return " ".join(plain.split())[:limit]


def classify(status: int, body: str) -> str:
    """The reason category of an XNAT answer that is not a success (whether it is worth
    trying again is ``seeds/failure_reasons.csv``'s to say)."""
    low = body.lower()
    if status == 423:  # "Duplicate archive attempt": another request is archiving it now
        return "xnat_busy"
    # DICOM-zip wraps every archive failure as a 400 whose wording varies by version
    # ("unable to archive for the Prearchive session", "Failed to archive ...")
    wrapped = "failed to archive" in low or "unable to archive" in low
    if status == 409 or (status == 400 and wrapped):
        return "xnat_conflict"
    if status == 429 or status >= 500:
        return "xnat_unavailable"
    return "rejected_by_xnat"


class XnatClient(SessionReads, DqrCalls):
    """A logged-in XNAT for one project. Use as a context manager."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = settings.xnat.url.rstrip("/")
        self.project = settings.xnat.project
        self.timeout = settings.xnat.timeout
        self._session: Any = None
        self.user = ""
        self._version: str | None = None
        self._login_lock = threading.Lock()  # uploads in flight share the one login

    # ------------------------------------------------------------------ connection

    def __enter__(self) -> XnatClient:
        import xnat  # heavy import: only when XNAT is really used

        creds = credentials(self.url)
        self.user = creds.user
        try:
            self._session = xnat.connect(
                self.url,
                user=creds.user,
                password=creds.password,
                verify=self.settings.xnat.verify_tls,
                default_timeout=self.timeout,
                logger=logging.getLogger("connectors.xnat.client"),
                extension_types=False,  # only xnat.xsd and xdat.xsd: faster, all we use
            )
        except xnat.exceptions.XNATLoginFailedError:
            raise XnatUnreachable(
                f"XNAT at {self.url} refused the login of {creds.user!r} "
                f"(credentials from {creds.source})"
            ) from None
        except requests.exceptions.RequestException as e:
            raise XnatUnreachable(f"XNAT at {self.url} does not answer: {_why(e)}") from None
        except Exception as e:
            raise XnatUnreachable(
                f"XNAT at {self.url} could not be used: {_short(str(e))}"
            ) from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._session is not None:
            try:
                self._session.disconnect()
            except Exception as e:
                logger.debug("XNAT disconnect failed: %s", _short(str(e)))
                xnatpy_session.let_go(self._session)  # or its __del__ tries again at GC
            self._session = None

    @property
    def http(self) -> requests.Session:
        return self._session.interface  # type: ignore[no-any-return]

    def _request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        per_study: bool,
        ok: Iterable[int] = (200,),
        timeout: float | None = None,
        _again: bool = False,
        **kwargs: Any,
    ) -> requests.Response:
        """One HTTP call; errors become ``StudyFailed`` (per_study) or ``XnatUnreachable``.
        A 401 (the JSESSION expired) logs in again once and repeats the call; a streamed
        body cannot be repeated, so that call fails as transient and its study is retried."""
        try:
            resp = self.http.request(
                method, self.url + path, timeout=timeout or self.timeout, **kwargs
            )
        except requests.exceptions.Timeout as e:
            if per_study:
                raise StudyFailed("timeout", f"XNAT {what}: {_why(e)}") from None
            raise XnatUnreachable(f"XNAT {what}: {_why(e)}") from None
        except requests.exceptions.RequestException as e:
            if per_study:
                raise StudyFailed("xnat_unavailable", f"XNAT {what}: {_why(e)}") from None
            raise XnatUnreachable(
                f"XNAT at {self.url} does not answer ({what}): {_why(e)}"
            ) from None
        if resp.status_code in tuple(ok):
            return resp
        body = _short(resp.text)
        if resp.status_code == 401 and not _again and self._session is not None:
            self._relogin(what)
            data = kwargs.get("data")
            if data is not None and not isinstance(data, bytes | str | dict):
                message = f"XNAT's session expired during {what}; logged in again"
                raise (
                    StudyFailed("xnat_unavailable", message)
                    if per_study
                    else XnatUnreachable(message)
                )
            return self._request(
                method,
                path,
                what=what,
                per_study=per_study,
                ok=ok,
                timeout=timeout,
                _again=True,
                **kwargs,
            )
        if resp.status_code == 401:
            raise XnatUnreachable(
                f"XNAT refused our credentials ({what}): HTTP 401; check XNAT_USER/XNAT_PASS"
            )
        category = classify(resp.status_code, resp.text)
        message = f"XNAT {what}: HTTP {resp.status_code} {body}".strip()
        if per_study:
            raise StudyFailed(category, message)
        raise XnatUnreachable(message)

    def _relogin(self, what: str) -> None:
        """Log in again, as ``xnat.connect`` does (PUT ``/data/services/auth``); the new
        JSESSIONID replaces the expired one in the session's cookie jar."""
        with self._login_lock:  # two calls refused at once log in once each, never interleaved
            self._login_again(what)

    def _login_again(self, what: str) -> None:
        creds = credentials(self.url)
        jar = self.http.cookies
        for cookie in [c for c in jar if c.name == "JSESSIONID"]:
            jar.clear(cookie.domain, cookie.path, cookie.name)
        try:
            resp = self.http.put(
                self.url + "/data/services/auth",
                data={"username": creds.user, "password": creds.password},
                timeout=self.timeout,
            )
        except requests.exceptions.RequestException as e:
            raise XnatUnreachable(
                f"XNAT at {self.url} does not answer ({what}): {_why(e)}"
            ) from None
        if resp.status_code != 200:
            raise XnatUnreachable(
                f"XNAT refused our credentials ({what}): HTTP 401, and HTTP {resp.status_code} "
                "to a new login; check XNAT_USER/XNAT_PASS"
            )
        if not any(c.name == "JSESSIONID" for c in jar):
            jar.set("JSESSIONID", resp.text.strip(), path="/")
        logger.info("XNAT's session expired (%s): logged in again as %s", what, creds.user)

    def _get_json(self, path: str, what: str, params: dict[str, Any] | None = None) -> Any:
        """A read of the whole project (not one study's): retried briefly, then fatal."""
        query = {"format": "json", **(params or {})}
        for attempt in range(GET_RETRIES + 1):
            try:
                return self._request("GET", path, what=what, per_study=False, params=query).json()
            except XnatUnreachable:
                if attempt == GET_RETRIES:
                    raise
                time.sleep(0.5 * 2**attempt)
            except ValueError:
                raise XnatUnreachable(f"XNAT {what}: the answer is not JSON") from None
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ the project

    def check_project(self) -> None:
        """The configured project exists and we may read it, else ``ConfigError`` (exit 2):
        XNAT answers 404 for both, and the fix is in the config or the project's users."""
        try:
            self._request(
                "GET",
                f"/data/projects/{self.project}",
                what="project",
                per_study=True,
                params={"format": "json"},
            )
        except StudyFailed as e:
            if "HTTP 404" in str(e) or "HTTP 403" in str(e):
                raise ConfigError(
                    f"XNAT at {self.url} has no project {self.project!r} that {self.user!r} "
                    "can read: check [xnat] project in the config and the project's members"
                ) from None
            raise XnatUnreachable(str(e)) from None

    def ensure_subject(self, label: str) -> str:
        """Create the subject if missing (201 new, 200 existing); returns its XNAT ID.
        Raw PUT: xnatpy's ``SubjectData(parent=...)`` needs the project object (a listing of
        all projects) and re-reads the subject after the PUT; this is one call."""
        resp = self._request(
            "PUT",
            f"/data/projects/{self.project}/subjects/{label}",
            what="create subject",
            per_study=True,
            ok=(200, 201),
        )
        return resp.text.strip()

    # ------------------------------------------------------------------ upload

    def upload_zip(
        self, body: Iterator[bytes], subject: str, session: str, timeout: float | None = None
    ) -> str:
        """POST a zip to the import service, archived at once (``dest=/archive``); returns the
        archive URI. Raw ``requests``: xnatpy's ``import_`` wants a file or a seekable stream
        (it calls ``seek(0)``), which would mean writing the whole zip to disk before sending;
        a generator body streams it (chunked) while it is being built."""
        resp = self._request(
            "POST",
            "/data/services/import",
            what="import",
            per_study=True,
            params={
                "import-handler": "DICOM-zip",
                "dest": "/archive",
                "project": self.project,
                "subject": subject,
                "session": session,
            },
            data=body,
            headers={"Content-Type": "application/zip"},
            timeout=timeout,
        )
        if resp.text.lstrip().lower().startswith(("<!doctype", "<html")):
            raise StudyFailed("rejected_by_xnat", "XNAT import answered HTML instead of a URI")
        return resp.text.strip().splitlines()[0] if resp.text.strip() else ""

    def delete_session(self, session_id: str) -> None:
        self._request(
            "DELETE",
            f"/data/experiments/{session_id}",
            what="delete partial session",
            per_study=True,
            params={"removeFiles": "true"},
        )

    def remove_prearchive(self, study_uid: str) -> int:
        """Delete the project's prearchive entries of this study (a failed import's leftovers)."""
        data = self._get_json(f"/data/prearchive/projects/{self.project}", "list prearchive")
        n = 0
        for row in data.get("ResultSet", {}).get("Result", []):
            if row.get("tag") == study_uid and row.get("url"):
                self._request(
                    "DELETE", "/data" + row["url"], what="delete prearchive entry", per_study=True
                )
                n += 1
        return n


def _why(e: Exception) -> str:
    text = str(e)
    if "refused" in text.lower():
        return "connection refused"
    if isinstance(e, requests.exceptions.Timeout):
        return "no answer in time"
    return _short(text, 160) or type(e).__name__
