"""Reading the project (contract §4) and creating subjects (§5): ResultSet listings with
``columns``, ``xsiType``, wildcard filters and paging; item documents; scans, resources, files."""

from __future__ import annotations

import fnmatch
import random
from typing import Any

from connectors.testbed.xnat_standin.store import Scan, Session, Store, Subject
from connectors.testbed.xnat_standin.web import (
    Answer,
    Request,
    Router,
    as_json,
    error,
    result_set,
    text,
)

CONTROL = {"format", "columns", "xsiType", "limit", "offset", "sortBy", "sortOrder", "req_format"}
IMAGE_SESSION = "xnat:imageSessionData"


def pages(version: str) -> bool:
    """Whether this XNAT version's listings honour ``limit``/``offset`` (from 1.8.9; before, every
    "page" is the whole list): xnat-web SecureResource.buildOffsetFromParams (``LIMIT n OFFSET
    m`` on the listing's SQL; .../restlet/resources/SecureResource.java), called by
    ProjSubExptList ("//inject paging") in the later tree (fork oncai/xnat); the older one
    (NrgXnat/xnat-reboot) has no LIMIT. The sources do not date it; NRG's API docs ("Paging
    RESTful tables") say "Starting in XNAT 1.8.9"; every version before is taken as ignoring it."""
    try:
        parts = tuple(int(p) for p in version.split(".")[:3])
    except ValueError:
        return False
    return parts >= (1, 8, 9)


def register(r: Router, store: Store, paged: Any = True) -> None:
    """``paged``: a bool, or a callable answering whether this request's listing pages. Each
    route imitates a NrgXnat/xnat-web restlet (org.nrg.xnat.restlet.resources): projects
    (ProjectListResource, ProjectResource), subjects (ProjectSubjectList, SubjectResource: PUT
    creates, 201 new / 200 existing), experiments (project and subject lists; ExperimentResource,
    DELETE with removeFiles), scans (ScanList, ScanResource), resources and files
    (files/CatalogResourceList, files/FileList); listings render as SecureResource's tables."""
    h = _Handlers(store, paged if callable(paged) else (lambda: paged))
    r.add("GET", "/data/projects", h.projects)
    r.add("GET", "/data/projects/{p}", h.project)
    # the project's prearchive setting (xnat-web ProjectResource prearchive_code; 4 = auto)
    r.add(
        "GET",
        "/data/projects/{p}/prearchive_code",
        lambda q: text(200, store.prearchive_codes.get(q.args["p"], "4")),
    )
    r.add("GET", "/data/projects/{p}/subjects", h.subjects)
    r.add("GET", "/data/projects/{p}/subjects/{s}", h.subject)
    r.add("PUT", "/data/projects/{p}/subjects/{s}", h.put_subject)
    r.add("DELETE", "/data/projects/{p}/subjects/{s}", h.delete_subject)
    r.add("GET", "/data/subjects/{s}", h.subject)
    r.add("GET", "/data/projects/{p}/experiments", h.experiments)
    r.add("GET", "/data/projects/{p}/subjects/{s}/experiments", h.experiments)
    r.add("GET", "/data/experiments", h.experiments)
    for base in (
        "/data/experiments/{e}",
        "/data/projects/{p}/experiments/{e}",
        "/data/projects/{p}/subjects/{s}/experiments/{e}",
    ):
        r.add("GET", base, h.experiment)
        r.add("DELETE", base, h.delete_experiment)
        r.add("GET", base + "/scans", h.scans)
        r.add("GET", base + "/scans/{scan}/resources", h.resources)
        r.add("GET", base + "/scans/{scan}/files", h.files)
        r.add("GET", base + "/scans/{scan}/resources/{res}/files", h.files)


def _select(
    req: Request,
    rows: list[dict[str, str]],
    default: list[str],
    paged: bool = True,
    fixed: bool = False,
    order: random.Random | None = None,
) -> Answer:
    """Filters (wildcards), paging (when ``paged``) and the ``columns`` projection, as a
    ResultSet (xnat-web QueryOrganizer listings). Paging as SecureResource.buildOffsetFromParams
    does it: only when ``limit`` or ``offset`` is given; a missing ``offset`` is 0, a missing
    ``limit`` 100 (DEFAULT_PAGE_SIZE), ``*`` for either means no paging. A paged answer has no
    ``totalRecords`` (ProjSubExptList puts it in only ``if (!hasOffset)``), an unpaged one the
    count of all rows. ``sortBy`` is ignored (rows in insertion order, i.e. by ID); xnat-web
    sorts after the SQL LIMIT (SecureResource.representTable), within a page: whether the SQL
    has an ORDER BY the sources read leave open, so with ``order`` (``Store.page_order``) a
    paged listing is cut from rows in an arbitrary order each time, the harsher case."""
    for key, values in req.params.items():
        if key in CONTROL or not values:
            continue
        pattern = values[0]
        if key == "date" and "/" in pattern:
            rows = [r for r in rows if _date_in(r.get("date", ""), pattern)]
        else:
            rows = [r for r in rows if fnmatch.fnmatchcase(r.get(key, ""), pattern)]
    total, counted = len(rows), True
    limit, offset = req.param("limit"), req.param("offset")
    if paged and (limit is not None or offset is not None) and "*" not in (limit, offset):
        start, size = int(offset or 0), int(limit or 100)
        rows = order.sample(rows, total) if order else rows
        if start > 0 or size > 0:
            rows, counted = rows[start : start + size], False
    cols_param = None if fixed else req.param("columns")
    cols = cols_param.split(",") if cols_param else default
    if "URI" not in cols and any("URI" in r for r in rows[:1]):
        cols = [*cols, "URI"]
    projected = [{c: r.get(c, "") for c in cols} for r in rows]
    return result_set(projected, total=total, fmt=req.param("format"), counted=counted)


def _date_in(iso: str, spec: str) -> bool:
    def us(d: str) -> str:
        m, dd, y = d.split("/")
        return f"{y}-{m.zfill(2)}-{dd.zfill(2)}"

    lo, _, hi = spec.partition("-")
    return us(lo) <= iso <= us(hi or lo) if iso else False


def _item(xsi: str, fields: dict[str, Any], children: list[dict[str, Any]] | None = None) -> Any:
    return {
        "meta": {"xsi:type": xsi, "isHistory": False, "start_date": "2024-01-01 00:00:00.0"},
        "data_fields": fields,
        "children": children or [],
    }


class _Handlers:
    def __init__(self, store: Store, paged: Any) -> None:
        self.store = store
        self.paged = paged

    # projects
    def projects(self, req: Request) -> Answer:
        with self.store.lock:
            rows = [
                {**p, "xsiType": "xnat:projectData", "URI": f"/data/projects/{p['ID']}"}
                for p in self.store.projects.values()
            ]
        return _select(req, rows, ["ID", "secondary_ID", "name", "description", "pi_firstname"])

    def project(self, req: Request) -> Answer:
        p = self.store.projects.get(req.args["p"])
        if p is None:
            return error(404, "Unable to find the specified experiment.")
        return as_json({"items": [_item("xnat:projectData", dict(p))]})

    # subjects
    def _subject_row(self, s: Subject) -> dict[str, str]:
        return {
            "ID": s.id,
            "project": s.project,
            "label": s.label,
            "insert_date": s.insert_date,
            "insert_user": "standin",
            "xsiType": "xnat:subjectData",  # every listing row of XNAT carries its type
            "URI": f"/data/subjects/{s.id}",
        }

    def subjects(self, req: Request) -> Answer:
        p = req.args["p"]
        if p not in self.store.projects:
            return error(404, f"Unable to identify project {p}")
        with self.store.lock:
            rows = [self._subject_row(s) for s in self.store.subjects.values() if s.project == p]
        return _select(
            req, rows, ["ID", "project", "label", "insert_date", "insert_user"], self.paged()
        )

    def _find_subject(self, req: Request) -> Subject | None:
        p, s = req.args.get("p"), req.args["s"]
        if p is None:
            return self.store.subjects.get(s)
        return self.store.subject_by_label(p, s)

    def subject(self, req: Request) -> Answer:
        with self.store.lock:
            s = self._find_subject(req)
            if s is None:
                return error(404, "Unable to find the specified subject.")
            fields = {"ID": s.id, "label": s.label, "project": s.project}
        return as_json({"items": [_item("xnat:subjectData", fields)]})

    def put_subject(self, req: Request) -> Answer:
        p = req.args["p"]
        if p not in self.store.projects:
            return error(422, "Submitted subject record must include the project attribute.")
        subj, created = self.store.put_subject(p, req.args["s"])  # check, then create
        return text(201 if created else 200, subj.id)

    def delete_subject(self, req: Request) -> Answer:
        """A subject and its experiments go (xnat-web SubjectResource.handleDelete)."""
        with self.store.lock:
            s = self._find_subject(req)
            if s is None:
                return error(404, "Unable to find the specified subject.")
            for x in [x for x in self.store.sessions.values() if x.subject_id == s.id]:
                self.store.delete_session(x.id)
            del self.store.subjects[s.id]
        return text(200, "")

    # experiments
    def _session_row(self, s: Session) -> dict[str, str]:
        subj = self.store.subjects.get(s.subject_id)
        return {
            "ID": s.id,
            "project": s.project,
            "label": s.label,
            "subject_ID": s.subject_id,
            "subject_label": subj.label if subj else "",
            "date": s.date,
            "time": s.time,
            "modality": s.modality,
            "UID": s.uid,
            "studyInstanceUID": s.uid,
            "dcmAccessionNumber": s.accession,
            "xsiType": s.xsi_type,
            "insert_date": s.insert_date,
            "insert_user": "standin",
            "URI": f"/data/experiments/{s.id}",
        }

    def experiments(self, req: Request) -> Answer:
        p, s = req.args.get("p"), req.args.get("s")
        if p is not None and p not in self.store.projects:
            return error(404, f"Unable to identify project {p}")
        xsi = req.param("xsiType")
        with self.store.lock:
            subj = self._find_subject(req) if s is not None else None
            sessions = [
                x
                for x in self.store.sessions.values()
                if (p is None or x.project == p)
                and (s is None or (subj is not None and x.subject_id == subj.id))
                and (not xsi or xsi in (IMAGE_SESSION, "xnat:experimentData", x.xsi_type))
            ]
            rows = [self._session_row(x) for x in sessions]
        default = ["ID", "project", "date", "xsiType", "label", "insert_date"]
        if p is None:
            default += ["subject_ID", "subject_label"]
        return _select(req, rows, default, self.paged(), order=self.store.page_order)

    def _find_session(self, req: Request) -> Session | None:
        p, e = req.args.get("p"), req.args["e"]
        if p is None:
            return self.store.sessions.get(e)
        return self.store.session_by_label(p, e)

    def experiment(self, req: Request) -> Answer:
        with self.store.lock:
            s = self._find_session(req)
            if s is None:
                return error(404, "Unable to find the specified experiment.")
            row = self._session_row(s)
            fields = {k: row[k] for k in ("ID", "label", "project", "date", "time", "modality")}
            fields |= {"subject_ID": s.subject_id, "UID": s.uid, "dcmAccessionNumber": s.accession}
            scans = [
                _item(
                    sc.xsi_type,
                    {
                        "ID": sc.id,
                        "type": sc.series_description or sc.modality,
                        "UID": sc.uid,
                        "series_description": sc.series_description,
                        "image_session_ID": s.id,
                        "frames": len(sc.files),
                    },
                )
                for sc in s.scans.values()
            ]
            xsi = s.xsi_type
        children = [{"field": "scans/scan", "items": scans}] if scans else []
        return as_json({"items": [_item(xsi, fields, children)]})

    def delete_experiment(self, req: Request) -> Answer:
        with self.store.lock:
            s = self._find_session(req)
            if s is None:
                return error(404, "Unable to find the specified experiment.")
            self.store.delete_session(s.id)
        return text(200, "")

    def _scans_of(self, req: Request) -> tuple[Session | None, list[Scan]]:
        s = self._find_session(req)
        if s is None:
            return None, []
        wanted = req.args.get("scan", "ALL")
        scans = [x for x in s.scans.values() if wanted in ("ALL", x.id)]
        return s, scans

    def scans(self, req: Request) -> Answer:
        with self.store.lock:
            s, scans = self._scans_of(req)
            if s is None:
                return error(404, "Unable to find the specified experiment.")
            rows = [
                {
                    "xnat_imagescandata_id": str(i + 1),
                    "ID": x.id,
                    "type": x.series_description or x.modality,
                    "quality": "usable",
                    "xsiType": x.xsi_type,
                    "note": "",
                    "series_description": x.series_description,
                    "UID": x.uid,
                    "modality": x.modality,
                    "frames": str(len(x.files)),
                    "URI": f"/data/experiments/{s.id}/scans/{x.id}",
                }
                for i, x in enumerate(scans)
            ]
        return _select(
            req,
            rows,
            [
                "xnat_imagescandata_id",
                "ID",
                "type",
                "quality",
                "xsiType",
                "note",
                "series_description",
            ],
        )

    def resources(self, req: Request) -> Answer:
        with self.store.lock:
            s, scans = self._scans_of(req)
            if s is None:
                return error(404, "Unable to find the specified experiment.")
            rows: list[dict[str, str]] = []
            for x in scans:
                for rid, label, fmt, content, files in _resources_of(s, x):
                    rows.append(
                        {
                            "xnat_abstractresource_id": rid,
                            # no URI, ID or xsiType: XNAT's resource listings have none of them
                            # (xnatpy's XNATListing builds the URI from xnat_abstractresource_id
                            # and reads the type from element_name; pyxnat needs a URI for any
                            # row with an xsiType)
                            "label": label,
                            "element_name": "xnat:resourceCatalog",
                            "category": "scans",
                            "cat_id": x.id,
                            "format": fmt,
                            "content": content,
                            "file_count": str(len(files)),
                            "file_size": str(sum(files.values())),
                        }
                    )
        # resource and file lists are fixed tables: ``columns`` is not theirs (xnat-web
        # files/CatalogResourceList and files/FileList build them by hand, not from a search)
        return _select(req, rows, list(rows[0]) if rows else ["label", "file_count"], fixed=True)

    def files(self, req: Request) -> Answer:
        """A scan's (or ``ALL`` scans') files, of every resource or of ``resources/{res}``
        only (xnat-web FileList restlet: ``/scans/{ids}/resources/{label}/files``)."""
        wanted = req.args.get("res")
        with self.store.lock:
            s, scans = self._scans_of(req)
            if s is None:
                return error(404, "Unable to find the specified experiment.")
            rows = [
                {
                    "Name": name,
                    "path": name,
                    "Size": str(size),
                    "URI": f"/data/experiments/{s.id}/scans/{x.id}/resources/{label}/files/{name}",
                    "collection": label,
                    "cat_ID": x.id,
                    "file_format": fmt,
                    "file_content": content,
                }
                for x in scans
                for rid, label, fmt, content, files in _resources_of(s, x)
                if wanted in (None, label, rid)
                for name, size in files.items()
            ]
        return _select(req, rows, list(rows[0]) if rows else ["Name", "Size"], fixed=True)


def _resources_of(s: Session, x: Scan) -> list[tuple[str, str, str, str, dict[str, int]]]:
    """(id, label, format, content, files) of a scan's resources: DICOM, and SNAPSHOTS once
    made. A resource is addressed by label or by its ``xnat_abstractresource_id``, a number
    unique in the whole XNAT (xnatpy caches resource objects by it)."""
    number = int("".join(c for c in s.id if c.isdigit()) or 0)
    pos = number * 100_000 + (list(s.scans.values()).index(x) + 1) * 10
    dicom = {f"{uid}.dcm": size for uid, size in x.files.items()}
    out = [(str(pos + 1), "DICOM", "DICOM", "RAW", dicom)]
    if x.snapshots:
        snaps = {f"{x.id}_snapshot_{i}.gif": 2048 for i in range(x.snapshots)}
        out.append((str(pos + 2), "SNAPSHOTS", "GIF", "SNAPSHOTS", snaps))
    return out
