"""What a real load needs of XNAT, checked by ``pacs2xnat doctor``: the version (and so
whether listings page), the project's auto-archive setting, the user's right to create
subjects and sessions, and in DQR mode the plugin's PACS and the receiving SCP. Each check is
(name, ok, detail, fix)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.errors import Pacs2XnatError

if TYPE_CHECKING:
    from connectors.xnat.client import XnatClient

Result = tuple[str, bool, str, str]
# the project's prearchive code (xnat-framework PrearchiveCode): 0 Manual, 4 AutoArchive,
# 5 AutoArchiveOverwrite
AUTO_ARCHIVE = {"4": "auto-archive", "5": "auto-archive (overwrite)"}
WRITERS = ("owner", "member")  # XNAT project groups that may create subjects and sessions


def readiness(client: XnatClient, mode: str) -> list[Result]:
    out = [_version(client), _auto_archive(client, mode), _may_write(client)]
    if mode == "dqr":
        out.append(_dqr(client))
    return out


def _version(client: XnatClient) -> Result:
    v = client.version
    if not v:
        return (
            "XNAT version",
            False,
            "/xapi/siteConfig/buildInfo told no version",
            "check that [xnat] url is XNAT 1.8 or later",
        )
    paging = "listings page" if client.pages() else "listings do not page (read in one answer)"
    ok = v.split(".")[:2] >= ["1", "8"] if v[:1].isdigit() else False
    return ("XNAT version", ok, f"{v}: {paging}", "pacs2xnat is tested with XNAT 1.8.x")


def _auto_archive(client: XnatClient, mode: str) -> Result:
    name = "project auto-archive"
    try:
        code = client.prearchive_code().strip()
    except Pacs2XnatError as e:
        return (name, False, str(e), "ask the XNAT admin for the project's prearchive setting")
    if code in AUTO_ARCHIVE:
        return (name, True, f"{client.project}: {AUTO_ARCHIVE[code]}", "")
    detail = f"{client.project}: prearchive code {code or '?'} (sessions wait in the prearchive)"
    if mode == "dqr":  # what DQR sends goes through the receiver and the project's setting
        return (name, False, detail, "set the project to auto-archive (Manage → Prearchive)")
    return (name, True, detail + "; direct mode archives with dest=/archive anyway", "")


def _may_write(client: XnatClient) -> Result:
    name = "XNAT permissions"
    try:
        groups = client.user_groups()
    except Pacs2XnatError as e:
        return (name, False, str(e), "ask the XNAT admin to make the user a project member")
    wanted = {f"{client.project}_{g}" for g in WRITERS}
    if wanted & set(groups) or "ALL_DATA_ADMIN" in groups:
        return (name, True, f"{client.user} may create subjects and sessions", "")
    return (
        name,
        False,
        f"{client.user} is in {', '.join(groups) or 'no group'} of XNAT",
        f"make {client.user} an owner or member of {client.project} (collaborators read only)",
    )


def _dqr(client: XnatClient) -> Result:
    name = "DQR plugin and receiver"
    try:
        pacs_id = client.dqr_pacs_id()
        ae, port = client.dqr_destination()
    except Pacs2XnatError as e:
        return (
            name,
            False,
            str(e),
            "install DQR, add the PACS, enable a receiver with custom "
            "processing (or set [xnat] dqr_ae_title/dqr_port)",
        )
    return (name, True, f"PACS {pacs_id}; the PACS sends to {ae}:{port}", "")
