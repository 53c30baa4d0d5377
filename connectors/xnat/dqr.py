"""XNAT's DICOM Query-Retrieve plugin: the XAPI JSON calls (xnatpy has no API for them),
mixed into ``XnatClient`` (``client.py``), whose ``_request`` translates errors."""

from __future__ import annotations

from typing import Any

from connectors.errors import ConfigError, StudyFailed, XnatUnreachable


class DqrCalls:
    """The DQR part of ``XnatClient``."""

    settings: Any
    project: str

    def _request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        per_study: bool,
        ok: Any = (200,),
        timeout: float | None = None,
        _again: bool = False,
        **kwargs: Any,
    ) -> Any:
        raise NotImplementedError  # XnatClient's

    def dqr_pacs_id(self) -> int:
        """The configured PACS (``[xnat] dqr_pacs``: id, label or AE title) in XNAT's DQR list."""
        try:
            resp = self._request("GET", "/xapi/pacs", what="list DQR PACS", per_study=False)
            pacs = resp.json()
        except ValueError:
            raise XnatUnreachable(
                "XNAT /xapi/pacs did not answer JSON (is DQR installed?)"
            ) from None
        wanted = self.settings.xnat.dqr_pacs
        for p in pacs:
            if wanted in (str(p.get("id")), p.get("label"), p.get("aeTitle")):
                return int(p["id"])
        if not wanted and len(pacs) == 1:
            return int(pacs[0]["id"])
        names = ", ".join(f"{p.get('id')} ({p.get('label')})" for p in pacs) or "none"
        raise ConfigError(f"[xnat] dqr_pacs = {wanted!r} is not one of XNAT's DQR PACS: {names}")

    def dqr_find_study(self, pacs_id: int, study_uid: str) -> bool:
        resp = self._request(
            "POST",
            "/xapi/dqr/query/studies",
            what="DQR query",
            per_study=True,
            ok=(200, 204),
            json={"pacsId": pacs_id, "studyInstanceUid": study_uid},
        )
        return resp.status_code == 200 and bool(resp.json())

    def dqr_import(self, pacs_id: int, study_uid: str, subject: str, session: str) -> list[int]:
        resp = self._request(
            "POST",
            "/xapi/dqr/import",
            what="DQR import request",
            per_study=True,
            json={
                "pacsId": pacs_id,
                "projectId": self.project,
                "forceImport": False,
                "studies": [
                    {
                        "studyInstanceUid": study_uid,
                        "seriesInstanceUids": [],
                        "seriesDescriptions": [],
                        "relabelMap": {"Subject": subject, "Session": session},
                    }
                ],
            },
        )
        return [int(r["id"]) for r in resp.json()]

    def dqr_status(self, request_id: int) -> str:
        for where in ("history", "queue"):
            try:
                resp = self._request(
                    "GET",
                    f"/xapi/dqr/import/{where}/{request_id}",
                    what="DQR request status",
                    per_study=True,
                )
            except StudyFailed as e:
                if "HTTP 404" in str(e):
                    continue
                raise
            return str(resp.json().get("status", ""))
        return ""
