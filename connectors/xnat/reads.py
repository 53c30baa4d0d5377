"""Reading the project's sessions: XNAT's version (and whether its listings page), the
session listing, a study's session by Study UID or label, its scans, DICOM files and
prearchive rows. Mixed into ``XnatClient`` (``client.py``), whose ``_request`` and
``_get_json`` translate errors."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

from connectors.errors import XnatUnreachable
from connectors.xnat.calls import ClientCalls
from connectors.xnat.labels import xnat_label

logger = logging.getLogger(__name__)

IMAGE_SESSION = "xnat:imageSessionData"
SESSION_COLUMNS = "ID,label,subject_ID,subject_label,date,modality,UID,xsiType,insert_date"
PAGE_SIZE = 1000


class SessionReads(ClientCalls):
    """The reading part of ``XnatClient``."""

    _version: str | None

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
        than a page, a page that repeats a row of an earlier one (offset ignored, or pages in
        no stable order: then it is read unpaged), or ``totalRecords`` reached ends it, so
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
            elif rows and (key == first or any(r.get("ID") in seen for r in rows)):
                # offset ignored, or pages cut from rows in no stable order (one seen again
                # means another may never be seen): read the whole list once more
                logger.info("XNAT's pages overlap (version %s): reading it unpaged", self.version)
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

    def prearchive_rows(self, study_uid: str) -> list[dict[str, str]]:
        """The project's prearchive rows of this study (``tag`` is the Study Instance UID)."""
        data = self._get_json(f"/data/prearchive/projects/{self.project}", "list prearchive")
        rows = data.get("ResultSet", {}).get("Result", [])
        return [dict(r) for r in rows if r.get("tag") == study_uid]

    def prearchive_code(self) -> str:
        """The project's prearchive setting (``/data/projects/{p}/prearchive_code``)."""
        resp = self._request(
            "GET",
            f"/data/projects/{self.project}/prearchive_code",
            what="prearchive setting",
            per_study=False,
        )
        return str(resp.text)

    def user_groups(self) -> list[str]:
        """The user's XNAT groups (``/xapi/users/{user}/groups``: ``HNC_owner``, ...)."""
        user = getattr(self, "user", "")
        resp = self._request(
            "GET", f"/xapi/users/{user}/groups", what="user groups", per_study=False
        )
        try:
            return [str(g) for g in resp.json()]
        except ValueError:
            raise XnatUnreachable("XNAT /xapi/users/.../groups did not answer JSON") from None
