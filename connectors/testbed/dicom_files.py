"""Write a synthetic cohort's studies as real DICOM files (pydicom), deterministic by seed.

Every instance carries the patient, study, series and instance attributes a PACS indexes and a
study-level C-FIND returns (Patient ID/Name/Birth Date/Sex, Study Date/Time/Description,
Accession Number, Study/Series/SOP Instance UIDs, Modality), the Specific Character Set its
names need (``ISO_IR 100`` Latin-1 or ``ISO_IR 192`` UTF-8, alternating by patient for names
outside ASCII) and, unless ``pixels=False``, a small 16-bit monochrome image (64×64 by
default) whose values depend only on the instance UID. Files are written owner-only.

    files = write_cohort(make_cohort(40, seed=7), tmp_path / "dicom")
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

from connectors.testbed.cohort import Cohort, Patient, Series, Study

#: The storage SOP class each synthetic modality is written with.
SOP_CLASS_BY_MODALITY = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "MR": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "PT": "1.2.840.10008.5.1.4.1.1.128",  # Positron Emission Tomography Image Storage
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
    "IO": "1.2.840.10008.5.1.4.1.1.1.3",  # Digital Intra-Oral X-Ray - For Presentation
    "MG": "1.2.840.10008.5.1.4.1.1.1.2",  # Digital Mammography X-Ray - For Presentation
    "CR": "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
    "RF": "1.2.840.10008.5.1.4.1.1.12.2",  # X-Ray Radiofluoroscopic Image Storage
    "US": "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image Storage
}
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def sop_classes() -> list[str]:
    """Every SOP Class UID ``write_cohort`` may use (for an SCU's presentation contexts)."""
    return sorted({*SOP_CLASS_BY_MODALITY.values(), SECONDARY_CAPTURE})


def character_set(patient: Patient) -> str:
    """``ISO_IR 100`` for ASCII names and half of the accented ones, ``ISO_IR 192`` for the rest.

    Deterministic by MRN, so a cohort always exercises both Latin-1 and UTF-8 answers.
    """
    name = patient.dicom_name
    if name.isascii():
        return "ISO_IR 100"
    digest = hashlib.sha256(patient.mrn.encode()).digest()
    return "ISO_IR 192" if digest[0] % 2 else "ISO_IR 100"


def _pixels(uid: str, rows: int, cols: int) -> bytes:
    """A deterministic little-endian 16-bit image: a gradient offset by the UID's hash."""
    seed = int.from_bytes(hashlib.sha256(uid.encode()).digest()[:2], "little")
    row = bytearray()
    for c in range(cols):
        row += ((seed + c * 37) % 4096).to_bytes(2, "little")
    out = bytearray()
    for r in range(rows):
        shift = (r * 2) % len(row)
        out += row[shift:] + row[:shift]
    return bytes(out)


def instance_dataset(
    cohort: Cohort,
    study: Study,
    series: Series,
    number: int,
    sop_instance_uid: str,
    *,
    pixels: bool = True,
    rows: int = 64,
    cols: int = 64,
) -> Dataset:
    """One instance of ``study`` as a pydicom ``Dataset`` with its file meta."""
    patient = cohort.patient(study.mrn)
    sop_class = SOP_CLASS_BY_MODALITY.get(series.modality, SECONDARY_CAPTURE)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = character_set(patient)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance_uid
    ds.StudyDate = study.dicom_study_date
    ds.SeriesDate = study.dicom_study_date
    ds.StudyTime = study.study_time.strftime("%H%M%S")
    ds.AccessionNumber = study.accession_number
    ds.Modality = series.modality
    ds.Manufacturer = "pacs2xnat synthetic"
    ds.InstitutionName = "Synthetic Hospital"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = study.description
    ds.SeriesDescription = series.description
    ds.PatientName = patient.dicom_name
    ds.PatientID = study.mrn
    ds.PatientBirthDate = patient.birth_date.strftime("%Y%m%d")
    ds.PatientSex = patient.sex
    ds.StudyInstanceUID = study.study_instance_uid
    ds.SeriesInstanceUID = series.series_instance_uid
    ds.StudyID = study.accession_number[-6:]
    ds.SeriesNumber = series.series_number
    ds.InstanceNumber = number
    if pixels:
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = cols
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.PixelData = _pixels(sop_instance_uid, rows, cols)
    return ds


def iter_datasets(
    cohort: Cohort,
    studies: Iterable[Study] | None = None,
    *,
    pixels: bool = True,
    rows: int = 64,
    cols: int = 64,
    max_instances_per_series: int | None = None,
) -> Iterator[Dataset]:
    """Every instance of the given studies (default: all of the cohort's), in a fixed order."""
    for study in cohort.studies if studies is None else studies:
        for series, number, uid in cohort.iter_instances(study):
            if max_instances_per_series is not None and number > max_instances_per_series:
                continue
            yield instance_dataset(
                cohort, study, series, number, uid, pixels=pixels, rows=rows, cols=cols
            )


def write_cohort(
    cohort: Cohort,
    folder: Path,
    studies: Iterable[Study] | None = None,
    *,
    pixels: bool = True,
    rows: int = 64,
    cols: int = 64,
    max_instances_per_series: int | None = None,
) -> list[Path]:
    """Write the studies' instances under ``folder/<study uid>/<sop uid>.dcm``; return the paths.

    ``pixels=False`` writes headers only (fast, for thousands of studies);
    ``max_instances_per_series`` caps each series' instances (e.g. 1 for query benchmarks);
    ``expected_instances`` says how many a study then has.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths: list[Path] = []
    for ds in iter_datasets(
        cohort,
        studies,
        pixels=pixels,
        rows=rows,
        cols=cols,
        max_instances_per_series=max_instances_per_series,
    ):
        study_dir = folder / ds.StudyInstanceUID
        if not study_dir.is_dir():
            study_dir.mkdir(mode=0o700, exist_ok=True)
        path = study_dir / f"{ds.SOPInstanceUID}.dcm"
        old = os.umask(0o077)
        try:
            ds.save_as(path, enforce_file_format=True)
        finally:
            os.umask(old)
        paths.append(path)
    return paths


def expected_instances(study: Study, max_instances_per_series: int | None = None) -> int:
    """How many instances ``write_cohort`` writes for ``study`` with that cap."""
    cap = max_instances_per_series
    return sum(se.n_instances if cap is None else min(cap, se.n_instances) for se in study.series)


__all__ = [
    "SOP_CLASS_BY_MODALITY",
    "character_set",
    "expected_instances",
    "instance_dataset",
    "iter_datasets",
    "sop_classes",
    "write_cohort",
]
