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
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import requests

from connectors.config import Settings
from connectors.errors import ConfigError, StudyFailed, XnatUnreachable
from connectors.xnat.dqr import DqrCalls

logger = logging.getLogger(__name__)

IMAGE_SESSION = "xnat:imageSessionData"
SESSION_COLUMNS = "ID,label,subject_ID,subject_label,date,modality,UID,xsiType,insert_date"
PAGE_SIZE = 1000
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


# What XNAT turns into "_" in a session or subject label when it archives (xnat-web
# BaseXnatImagesessiondata.cleanValue, applied by PrearcSessionArchiver.fixSessionLabel and
# fixSubject): the label we send is not always the label XNAT keeps.
XNAT_CLEANED = frozenset(" `~@#$%^&*()+=[]{}|\\/?:;\"',.<>")


def xnat_label(label: str) -> str:
    """The label XNAT will archive for ``label``."""
    return "".join("_" if c in XNAT_CLEANED else c for c in label)


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


class XnatClient(DqrCalls):
    """A logged-in XNAT for one project. Use as a context manager."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = settings.xnat.url.rstrip("/")
        self.project = settings.xnat.project
        self.timeout = settings.xnat.timeout
        self._session: Any = None
        self.user = ""
        self._version: str | None = None

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
        **kwargs: Any,
    ) -> requests.Response:
        """One HTTP call; errors become ``StudyFailed`` (per_study) or ``XnatUnreachable``."""
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
        if resp.status_code == 401:
            raise XnatUnreachable(
                f"XNAT refused our credentials ({what}): HTTP 401; check XNAT_USER/XNAT_PASS"
            )
        category = classify(resp.status_code, resp.text)
        message = f"XNAT {what}: HTTP {resp.status_code} {body}".strip()
        if per_study:
            raise StudyFailed(category, message)
        raise XnatUnreachable(message)

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

    @property
    def version(self) -> str:
        """XNAT's version (``/xapi/siteConfig/buildInfo``), read once; "" when not told."""
        if self._version is None:
            try:
                resp = self._request(
                    "GET", "/xapi/siteConfig/buildInfo", what="XNAT version", per_study=False
                )
                self._version = str(resp.json().get("version", "") or "")
            except (XnatUnreachable, ValueError, AttributeError):
                self._version = ""
        return self._version

    def pages(self) -> bool:
        """Whether this XNAT's listings honour ``limit``/``offset`` (1.8.9 and later; an
        unknown version is assumed to, and checked on every page)."""
        parts = re.findall(r"\d+", self.version)[:3]
        return not parts or tuple(int(p) for p in parts) >= (1, 8, 9)

    def iter_sessions(self, page_size: int = PAGE_SIZE) -> Iterator[dict[str, str]]:
        """Every image session of the project, one listing page at a time.

        Raw listing, not ``project.experiments``: xnatpy's listing fetches everything in one
        answer with its own four columns and then one item document per session for the
        date, modality and UID; the ``columns=`` listing gives them all, paged. Before XNAT
        1.8.9 ``limit``/``offset`` are ignored and every "page" is the whole list: such a
        version gets one unpaged request; and whatever the version says, an answer longer
        than a page, a page that repeats the first, or ``totalRecords`` reached ends it, so
        each session is yielded once.
        """
        query = {"xsiType": IMAGE_SESSION, "columns": SESSION_COLUMNS, "sortBy": "ID"}
        path = f"/data/projects/{self.project}/experiments"
        if not self.pages():
            data = self._get_json(path, "list sessions", query)
            yield from data.get("ResultSet", {}).get("Result", [])
            return
        offset, first, seen = 0, None, set()
        while True:
            data = self._get_json(
                path, "list sessions", {**query, "limit": page_size, "offset": offset}
            )
            result = data.get("ResultSet", {})
            rows = result.get("Result", [])
            key = [r.get("ID") for r in rows[:1]]
            if offset == 0:
                first = key
            elif rows and key == first:  # offset ignored: read the whole list once more
                logger.info("XNAT ignores offset (version %s): reading it unpaged", self.version)
                data = self._get_json(path, "list sessions", query)
                rows = data.get("ResultSet", {}).get("Result", [])
                yield from (r for r in rows if r.get("ID") not in seen)
                return
            for r in rows:
                if r.get("ID") not in seen:
                    seen.add(r.get("ID"))
                    yield r
            if offset == 0 and len(rows) > page_size:
                logger.info("XNAT ignores limit (version %s): one answer held all", self.version)
                return
            total = str(result.get("totalRecords", "")).strip()
            if len(rows) < page_size or (total.isdigit() and offset + len(rows) >= int(total)):
                return
            offset += page_size

    def scan_count(self, session_id: str) -> int:
        data = self._get_json(
            f"/data/experiments/{session_id}/scans", "list scans", {"columns": "ID"}
        )
        return len(data.get("ResultSet", {}).get("Result", []))

    def find_session(self, label: str) -> dict[str, str] | None:
        """The project's image session with this label (one listing call), or None."""
        data = self._get_json(
            f"/data/projects/{self.project}/experiments",
            "find session",
            {"xsiType": IMAGE_SESSION, "columns": SESSION_COLUMNS, "label": label},
        )
        for row in data.get("ResultSet", {}).get("Result", []):
            if row.get("label") == label:
                return dict(row)
        return None

    def find_session_by_uid(self, study_uid: str) -> dict[str, str] | None:
        """The project's image session of this Study Instance UID, or None. The filter is a
        column filter of the listing; the rows are checked here too, so a server that ignores
        it costs time, never a wrong answer."""
        data = self._get_json(
            f"/data/projects/{self.project}/experiments",
            "find session by Study UID",
            {"xsiType": IMAGE_SESSION, "columns": SESSION_COLUMNS, "UID": study_uid},
        )
        for row in data.get("ResultSet", {}).get("Result", []):
            if row.get("UID") == study_uid:
                return dict(row)
        return None

    def find_study(self, study_uid: str, label: str) -> dict[str, str] | None:
        """The session of a study: by Study UID first (XNAT keeps it whatever it does to
        labels), then by the label XNAT would have archived (``xnat_label``), then as sent."""
        row = self.find_session_by_uid(study_uid)
        if row is not None:
            return row
        cleaned = xnat_label(label)
        row = self.find_session(cleaned)
        if row is None and cleaned != label:
            row = self.find_session(label)
        return row

    def count_files(self, session_id: str) -> int:
        """DICOM files XNAT holds for the session, over all its scans (one files listing of
        the scans' ``DICOM`` resource: a scan also holds SNAPSHOTS and whatever a pipeline
        adds, which were never sent and are no measure of a complete upload)."""
        resp = self._request(
            "GET",
            f"/data/experiments/{session_id}/scans/ALL/resources/DICOM/files",
            what="count archived files",
            per_study=True,
            params={"format": "json"},
        )
        return len(resp.json().get("ResultSet", {}).get("Result", []))

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

    def prearchive_rows(self, study_uid: str) -> list[dict[str, str]]:
        """The project's prearchive rows of this study (``tag`` is the Study Instance UID)."""
        data = self._get_json(f"/data/prearchive/projects/{self.project}", "list prearchive")
        rows = data.get("ResultSet", {}).get("Result", [])
        return [dict(r) for r in rows if r.get("tag") == study_uid]

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
