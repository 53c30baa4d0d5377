"""The stand-in XNAT behaves as xnat-rest-contract.md says, and the real xnat client works
against it (connect, list projects/subjects/experiments, ``services.import_``)."""

from __future__ import annotations

import io
import threading
import time
import zipfile
from pathlib import Path

import requests
import xnat

from connectors.xnat.zipstream import zip_stream
from tests.support.xnat_fixtures import StandinHandle, dicom_study


def _zip(files: list[Path]) -> bytes:
    return b"".join(zip_stream(files))


def _auth(h: StandinHandle) -> tuple[str, str]:
    return (h.user, h.password)


def test_xnatpy_connects_lists_and_imports(standin_xnat: StandinHandle, tmp_path: Path) -> None:
    """It lets the real xnat client connect, list projects, subjects and experiments, and
    import a DICOM zip straight to the archive as subject/session of our choosing."""
    uid, files = dicom_study(tmp_path / "s", 4, series=2)
    archive = tmp_path / "study.zip"
    archive.write_bytes(_zip(files))
    h = standin_xnat
    with xnat.connect(h.url, user=h.user, password=h.password) as session:
        assert "HNC" in session.projects
        project = session.projects["HNC"]
        assert len(project.subjects) == 0
        assert len(project.experiments) == 0
        exp = session.services.import_(
            str(archive),
            project="HNC",
            subject="9434765919",
            experiment="ACC0001",
            destination="/archive",
            import_handler="DICOM-zip",
        )
        exp_id = exp.id
        assert exp.label == "ACC0001"
        assert exp.modality == "CT"
        assert exp.uid == uid
        assert sorted(s.id for s in exp.scans.values()) == ["1", "2"]
        session.clearcache()
        project = session.projects["HNC"]
        assert [s.label for s in project.subjects.values()] == ["9434765919"]
        assert [e.label for e in project.experiments.values()] == ["ACC0001"]
    files_listing = requests.get(
        f"{h.url}/data/experiments/{exp_id}/scans/ALL/files",
        params={"format": "json"},
        auth=_auth(h),
        timeout=10,
    ).json()
    collections = [r["collection"] for r in files_listing["ResultSet"]["Result"]]
    assert collections.count("DICOM") == 4
    assert set(collections) == {"DICOM", "SNAPSHOTS"}  # every file is not every DICOM file
    dicom_only = requests.get(
        f"{h.url}/data/experiments/{exp_id}/scans/ALL/resources/DICOM/files",
        params={"format": "json"},
        auth=_auth(h),
        timeout=10,
    ).json()
    assert len(dicom_only["ResultSet"]["Result"]) == 4


def test_it_refuses_anonymous_and_wrong_credentials(standin_xnat: StandinHandle) -> None:
    """It answers 401 with WWW-Authenticate without credentials, refuses a wrong password at
    the login service, and honours the JSESSIONID cookie Basic auth opens."""
    h = standin_xnat
    r = requests.get(f"{h.url}/data/projects", params={"format": "json"}, timeout=10)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Basic realm=")
    bad = requests.put(
        f"{h.url}/data/services/auth", data={"username": h.user, "password": "nope"}, timeout=10
    )
    assert bad.status_code == 401
    s = requests.Session()
    first = s.post(f"{h.url}/data/JSESSION", auth=_auth(h), timeout=10)
    assert first.status_code == 200
    assert s.cookies.get("JSESSIONID")
    again = s.get(f"{h.url}/data/projects", params={"format": "json"}, timeout=10)
    assert again.status_code == 200
    assert again.json()["ResultSet"]["Result"][0]["ID"] == "HNC"


def test_import_rules_duplicates_and_prearchive(
    standin_xnat: StandinHandle, tmp_path: Path
) -> None:
    """It refuses octet-stream, refuses a duplicate archive without overwrite (400) but merges
    with one, keeps an upload without dest in the prearchive until archived, and sends an
    unknown project to Unassigned."""
    h = standin_xnat
    _, files = dicom_study(tmp_path / "a", 3)
    body = _zip(files)
    url = f"{h.url}/data/services/import"
    base = {"import-handler": "DICOM-zip", "project": "HNC", "subject": "S1", "session": "E1"}
    zip_type = {"Content-Type": "application/zip"}
    octet = requests.post(
        url,
        params={**base, "dest": "/archive"},
        data=body,
        headers={"Content-Type": "application/octet-stream"},
        auth=_auth(h),
        timeout=10,
    )
    assert octet.status_code == 400
    ok = requests.post(
        url,
        params={**base, "dest": "/archive"},
        data=body,
        headers=zip_type,
        auth=_auth(h),
        timeout=10,
    )
    assert ok.status_code == 200
    assert ok.text == "/data/archive/projects/HNC/subjects/S1/experiments/E1\r\n"
    dup = requests.post(
        url,
        params={**base, "dest": "/archive"},
        data=body,
        headers=zip_type,
        auth=_auth(h),
        timeout=10,
    )
    assert dup.status_code == 400  # DICOM-zip answers 400 for a conflict, not 409
    assert "unable to archive" in dup.text
    merged = requests.post(
        url,
        params={**base, "dest": "/archive", "overwrite": "none"},
        data=body,
        headers=zip_type,
        auth=_auth(h),
        timeout=10,
    )
    assert merged.status_code == 200
    assert h.store.session_by_label("HNC", "E1").file_count() == 3

    _, other = dicom_study(tmp_path / "b", 2, accession="ACC2")
    pre = requests.post(
        url,
        params={**base, "session": "E2"},
        data=_zip(other),
        headers=zip_type,
        auth=_auth(h),
        timeout=10,
    )
    assert pre.status_code == 200
    assert pre.text.startswith("/data/prearchive/projects/HNC/")
    rows = requests.get(
        f"{h.url}/data/prearchive/projects/HNC",
        params={"format": "json"},
        auth=_auth(h),
        timeout=10,
    ).json()["ResultSet"]["Result"]
    entry = next(r for r in rows if r["name"] == "E2")
    archived = requests.post(
        f"{h.url}/data/services/archive", params={"src": entry["url"]}, auth=_auth(h), timeout=10
    )
    assert archived.status_code == 200
    assert archived.text.endswith("/experiments/E2\r\n")
    unassigned = requests.post(
        url,
        params={**base, "project": "NOPE", "dest": "/archive"},
        data=_zip(other),
        headers=zip_type,
        auth=_auth(h),
        timeout=10,
    )
    assert unassigned.text.startswith("/data/prearchive/projects/Unassigned/")


def test_subjects_and_listings(standin_xnat: StandinHandle, tmp_path: Path) -> None:
    """It creates subjects (201 new, 200 existing, 422 unknown project) and filters, pages
    and projects experiment listings the way XNAT does."""
    h = standin_xnat
    put = f"{h.url}/data/projects/HNC/subjects/9434765919"
    created = requests.put(put, auth=_auth(h), timeout=10)
    again = requests.put(put, auth=_auth(h), timeout=10)
    assert (created.status_code, again.status_code) == (201, 200)
    assert created.text == again.text
    missing = requests.put(f"{h.url}/data/projects/NOPE/subjects/X", auth=_auth(h), timeout=10)
    assert missing.status_code == 422
    for i in range(3):
        _, files = dicom_study(tmp_path / str(i), 1)
        zf = io.BytesIO(_zip(files))
        assert zipfile.ZipFile(zf).namelist()
        requests.post(
            f"{h.url}/data/services/import",
            params={"dest": "/archive", "project": "HNC", "subject": "S", "session": f"RA{i}"},
            data=zf.getvalue(),
            headers={"Content-Type": "application/zip"},
            auth=_auth(h),
            timeout=10,
        ).raise_for_status()
    listing = f"{h.url}/data/archive/projects/HNC/experiments"
    q = {"format": "json", "xsiType": "xnat:imageSessionData", "columns": "ID,label,UID"}
    page = requests.get(listing, params={**q, "limit": 2, "offset": 2}, auth=_auth(h), timeout=10)
    rows = page.json()["ResultSet"]["Result"]
    assert [r["label"] for r in rows] == ["RA2"]
    assert set(rows[0]) == {"ID", "label", "UID", "URI"}
    # a page carries no totalRecords (xnat-web ProjSubExptList: only when not paged), and
    # limit=* is every row (SecureResource.buildOffsetFromParams)
    assert "totalRecords" not in page.json()["ResultSet"]
    every = requests.get(listing, params={**q, "limit": "*"}, auth=_auth(h), timeout=10)
    assert [r["label"] for r in every.json()["ResultSet"]["Result"]] == ["RA0", "RA1", "RA2"]
    assert every.json()["ResultSet"]["totalRecords"] == "3"
    wild = requests.get(listing, params={**q, "label": "RA*"}, auth=_auth(h), timeout=10)
    assert wild.json()["ResultSet"]["totalRecords"] == "3"
    none = requests.get(f"{h.url}/data/projects/NOPE/experiments", auth=_auth(h), timeout=10)
    assert none.status_code == 404


def test_prearchive_rows_are_reused_and_move_through_xnat_states(
    standin_xnat: StandinHandle, tmp_path: Path
) -> None:
    """It puts a second upload of the same study into the open prearchive row (READY again
    after it), shows the row ARCHIVING while an archive that takes time in proportion to the
    files runs inside the import request, then removes it; a conflict is a 400."""
    h = standin_xnat
    uid, files = dicom_study(tmp_path / "a", 4)
    url = f"{h.url}/data/services/import"
    base = {"import-handler": "DICOM-zip", "project": "HNC", "subject": "S1", "session": "E1"}
    zip_type = {"Content-Type": "application/zip"}

    def post(body: bytes, **extra: str) -> requests.Response:
        return requests.post(
            url, params={**base, **extra}, data=body, headers=zip_type, auth=_auth(h), timeout=30
        )

    def rows(study: str = uid) -> list[dict[str, str]]:
        got = requests.get(
            f"{h.url}/data/prearchive/projects/HNC",
            params={"format": "json"},
            auth=_auth(h),
            timeout=10,
        )
        return [r for r in got.json()["ResultSet"]["Result"] if r["tag"] == study]

    assert post(_zip(files[:2])).status_code == 200
    assert post(_zip(files[2:])).status_code == 200
    (row,) = rows()
    assert row["status"] == "READY"
    assert h.store.prearchive[0].session.file_count() == 4
    h.server.app.archive.seconds_per_file = 0.15
    answers: list[requests.Response] = []
    worker = threading.Thread(target=lambda: answers.append(post(_zip(files), dest="/archive")))
    worker.start()
    seen: set[str] = set()
    while worker.is_alive():
        seen.update(r["status"] for r in rows())
        time.sleep(0.02)
    worker.join()
    assert answers[0].status_code == 200
    assert "ARCHIVING" in seen
    assert rows() == []
    assert h.store.session_by_label("HNC", "E1").file_count() == 4
    h.server.app.archive.seconds_per_file = 0.0
    other_uid, other = dicom_study(tmp_path / "b", 1)  # another study under the same label
    conflict = post(_zip(other), dest="/archive")
    assert conflict.status_code == 400
    assert [r["status"] for r in rows(other_uid)] == ["CONFLICT"]
