"""XNAT's DICOM Query-Retrieve plugin: the XAPI JSON calls (xnatpy has no API for them),
mixed into ``XnatClient`` (``client.py``), whose ``_request`` translates errors."""

from __future__ import annotations

from typing import Any

from connectors.errors import ConfigError, XnatUnreachable
from connectors.xnat.calls import ClientCalls


class DqrCalls(ClientCalls):
    """The DQR part of ``XnatClient``."""

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

    def dqr_destination(self) -> tuple[str, int]:
        """The XNAT DICOM receiver the PACS is to send to (``aeTitle``, ``port``): ``[xnat]
        dqr_ae_title``/``dqr_port`` when set, else the one enabled receiver with custom
        processing (which DQR's relabelling needs) in ``/xapi/dicomscp``."""
        xs = self.settings.xnat
        if xs.dqr_ae_title and xs.dqr_port:
            return str(xs.dqr_ae_title), int(xs.dqr_port)
        try:
            resp = self._request(
                "GET", "/xapi/dicomscp", what="list DICOM receivers", per_study=False
            )
            receivers = resp.json()
        except ValueError:
            raise XnatUnreachable("XNAT /xapi/dicomscp did not answer JSON") from None
        usable = [
            r
            for r in receivers
            if r.get("enabled")
            and r.get("customProcessing")
            and (not xs.dqr_ae_title or r.get("aeTitle") == xs.dqr_ae_title)
        ]
        if len(usable) != 1:
            names = ", ".join(f"{r.get('aeTitle')}:{r.get('port')}" for r in receivers) or "none"
            raise ConfigError(
                f"XNAT has {len(usable)} enabled DICOM receivers with custom processing "
                f"({names}): set [xnat] dqr_ae_title and dqr_port to the one DQR uses"
            )
        return str(usable[0]["aeTitle"]), int(usable[0]["port"])

    def dqr_import(
        self,
        pacs_id: int,
        destination: tuple[str, int],
        study_uid: str,
        subject: str,
        session: str,
    ) -> list[dict[str, Any]]:
        """Queue one study; returns the plugin's queue rows (``id``, ``requestId``)."""
        resp = self._request(
            "POST",
            "/xapi/dqr/import",
            what="DQR import request",
            per_study=True,
            json={
                "pacsId": pacs_id,
                "aeTitle": destination[0],
                "port": destination[1],
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
        return [dict(r) for r in resp.json()]

    def dqr_rows(self, request_id: str) -> tuple[list[str], list[str]]:
        """(queue statuses, history statuses) of the rows of one request (``requestId``): the
        queue row lives until the request succeeds or its retries are spent; each execution
        adds a history row."""
        out: list[list[str]] = []
        for where in ("queue", "history"):
            resp = self._request(
                "GET", f"/xapi/dqr/import/{where}", what="DQR requests", per_study=True
            )
            out.append(
                [
                    str(r.get("status", ""))
                    for r in resp.json()
                    if str(r.get("requestId")) == request_id
                ]
            )
        return out[0], out[1]
