"""Two real XNAT clients against the stand-in (issue 13): xnatpy (``xnat``) and ``pyxnat``
navigate a loaded cohort the way a person would (project → subjects → sessions → scans →
resources → files) and count what was sent; listings answer every ``format=`` XNAT has."""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET
from pathlib import Path

import pyxnat
import requests
import xnat

from connectors.xnat.client import XnatClient
from connectors.xnat.zipstream import zip_stream
from tests.support.xnat_fixtures import StandinHandle, dicom_study, xnat_settings

COHORT = {  # subject -> {session: (files, series)}
    "9434765919": {"RA0001": (3, 2), "RA0002": (2, 1)},
    "9434765870": {"RA0003": (4, 2)},
}


def _load_cohort(h: StandinHandle, tmp_path: Path) -> dict[str, int]:
    """Upload the cohort through our client; returns DICOM files per session label."""
    sent = {}
    with XnatClient(xnat_settings(h)) as client:
        for subject, sessions in COHORT.items():
            client.ensure_subject(subject)
            for label, (n, series) in sessions.items():
                _, files = dicom_study(tmp_path / label, n, series=series, accession=label)
                client.upload_zip(zip_stream(files), subject, label)
                sent[label] = n
    return sent


def test_xnatpy_and_pyxnat_navigate_a_loaded_cohort(
    standin_xnat: StandinHandle, tmp_path: Path
) -> None:
    """It lets xnatpy and pyxnat walk project → subjects → sessions → scans → resources →
    files, and both find every session with the DICOM files that were sent."""
    h = standin_xnat
    sent = _load_cohort(h, tmp_path)

    seen_xnatpy: dict[str, int] = {}
    with xnat.connect(h.url, user=h.user, password=h.password) as session:
        project = session.projects["HNC"]
        assert sorted(s.label for s in project.subjects.values()) == sorted(COHORT)
        for subject in project.subjects.values():
            for experiment in subject.experiments.values():
                assert experiment.__xsi_type__ == "xnat:ctSessionData"
                dicom = 0
                for scan in experiment.scans.values():
                    resources = {r.label: r for r in scan.resources.values()}
                    dicom += len(resources["DICOM"].files)
                seen_xnatpy[experiment.label] = dicom
    assert seen_xnatpy == sent

    seen_pyxnat: dict[str, int] = {}
    interface = pyxnat.Interface(server=h.url, user=h.user, password=h.password)
    try:
        project = interface.select.project("HNC")
        assert project.exists()
        assert sorted(s.label() for s in project.subjects()) == sorted(COHORT)
        for subject in project.subjects():
            for experiment in subject.experiments():
                dicom = sum(
                    len(scan.resource("DICOM").files().get()) for scan in experiment.scans()
                )
                seen_pyxnat[experiment.label()] = dicom
    finally:
        interface.disconnect()
    assert seen_pyxnat == sent


def test_listings_answer_every_format_with_xsi_types(
    standin_xnat: StandinHandle, tmp_path: Path
) -> None:
    """It answers a listing as json, csv, xml or html as format= asks, with the same rows,
    and gives projects, subjects and sessions their xsiType."""
    h = standin_xnat
    _load_cohort(h, tmp_path)
    url = f"{h.url}/data/projects/HNC/experiments"
    columns = {"columns": "ID,label,xsiType"}

    def get(fmt: str, path: str = url) -> requests.Response:
        got = requests.get(
            path, params={**columns, "format": fmt}, auth=(h.user, h.password), timeout=10
        )
        got.raise_for_status()
        return got

    as_json = get("json").json()["ResultSet"]["Result"]
    labels = sorted(r["label"] for r in as_json)
    assert labels == ["RA0001", "RA0002", "RA0003"]
    assert {r["xsiType"] for r in as_json} == {"xnat:ctSessionData"}
    as_csv = list(csv.DictReader(io.StringIO(get("csv").text)))
    assert sorted(r["label"] for r in as_csv) == labels
    root = ET.fromstring(get("xml").content)  # noqa: S314 - our own stand-in's answer
    names = [c.text for c in root.iter("column")]
    cells = [[c.text for c in row.iter("cell")] for row in root.iter("row")]
    assert sorted(dict(zip(names, row, strict=True))["label"] for row in cells) == labels
    page = get("html")
    assert page.headers["Content-Type"].startswith("text/html")
    assert all(f"<td>{label}</td>" in page.text for label in labels)
    subjects = get("json", f"{h.url}/data/projects/HNC/subjects").json()["ResultSet"]["Result"]
    assert {r["xsiType"] for r in subjects} == {"xnat:subjectData"}
    projects = get("json", f"{h.url}/data/projects").json()["ResultSet"]["Result"]
    assert {r["xsiType"] for r in projects} == {"xnat:projectData"}
