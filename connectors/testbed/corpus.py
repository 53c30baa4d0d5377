"""A small real-world-like DICOM corpus: every storage SOP class family a head-and-neck cohort
meets, stored in every transfer syntax the tools here can write (synthetic data only).

Four studies of 7 instances: CT/MR, radiotherapy (RT Plan, RT Structure Set, RT Dose, planning
CT), documents and derived objects (Basic Text SR, Segmentation, MR), and ultrasound multi-frame
with secondary capture. pydicom writes each instance in Explicit VR Little Endian; dcmtk's
``dcmconv`` (implicit, big endian, deflated), ``dcmcjpeg`` (lossless SV1, baseline, extended),
``dcmcjpls`` (lossless, near-lossless) and ``dcmcrle`` convert them; JPEG 2000 (lossless and
lossy) is encoded with ``imagecodecs`` when it is installed (``JPEG2000_AVAILABLE``), else those
instances stay uncompressed. Explicit VR Big Endian is retired in DICOM but still found in old
archives, hence here.

    corpus = build_corpus(tmp_path / "corpus")      # list[CorpusInstance], files owner-only
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

try:  # optional: JPEG 2000 encoder (pip install imagecodecs)
    import imagecodecs
    import numpy

    JPEG2000_AVAILABLE = bool(imagecodecs.JPEG2K.available)
except ImportError:  # pragma: no cover - depends on the environment
    JPEG2000_AVAILABLE = False

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
RT_DOSE = "1.2.840.10008.5.1.4.1.1.481.2"
RT_STRUCT = "1.2.840.10008.5.1.4.1.1.481.3"
RT_PLAN = "1.2.840.10008.5.1.4.1.1.481.5"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"

LOSSY_SYNTAXES = frozenset({JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLSNearLossless, JPEG2000})
_ROOT = "1.2.826.0.1.3680043.10.1201."  # synthetic UIDs: deterministic by name


@dataclass(frozen=True)
class CorpusInstance:
    """One file of the corpus and what it holds."""

    path: Path
    study_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    modality: str


@dataclass(frozen=True)
class _Spec:
    modality: str
    sop_class: str
    syntax: str
    kind: str = "image"  # image | plan | struct | sr | seg | dose | us | sc
    bits: int = 16
    frames: int = 1


# Each study: (description, [instances]).
STUDIES: list[tuple[str, list[_Spec]]] = [
    (
        "CT and MR, uncompressed and lossless",
        [
            _Spec("CT", CT, ExplicitVRLittleEndian),
            _Spec("CT", CT, ImplicitVRLittleEndian),
            _Spec("CT", CT, ExplicitVRBigEndian),
            _Spec("CT", CT, DeflatedExplicitVRLittleEndian),
            _Spec("CT", CT, JPEGLosslessSV1),
            _Spec("MR", MR, JPEGLSLossless),
            _Spec("MR", MR, RLELossless),
        ],
    ),
    (
        "Radiotherapy plan",
        [
            _Spec("RTPLAN", RT_PLAN, ExplicitVRLittleEndian, "plan"),
            _Spec("RTSTRUCT", RT_STRUCT, ImplicitVRLittleEndian, "struct"),
            _Spec("RTDOSE", RT_DOSE, ExplicitVRLittleEndian, "dose", frames=4),
            _Spec("RTDOSE", RT_DOSE, RLELossless, "dose", frames=4),
            _Spec("CT", CT, JPEG2000Lossless),
            _Spec("CT", CT, JPEG2000),
            _Spec("CT", CT, JPEGLSLossless),
        ],
    ),
    (
        "Reports and derived objects",
        [
            _Spec("SR", BASIC_TEXT_SR, ExplicitVRLittleEndian, "sr"),
            _Spec("SR", BASIC_TEXT_SR, DeflatedExplicitVRLittleEndian, "sr"),
            _Spec("SEG", SEGMENTATION, ExplicitVRLittleEndian, "seg", bits=1, frames=2),
            _Spec("MR", MR, JPEGBaseline8Bit, bits=8),
            _Spec("MR", MR, JPEGExtended12Bit, bits=12),
            _Spec("MR", MR, JPEGLSNearLossless),
            _Spec("MR", MR, ImplicitVRLittleEndian),
        ],
    ),
    (
        "Ultrasound and secondary capture",
        [
            _Spec("US", US_MULTIFRAME, ExplicitVRLittleEndian, "us", bits=8, frames=3),
            _Spec("US", US_MULTIFRAME, JPEGBaseline8Bit, "us", bits=8, frames=3),
            _Spec("US", US_MULTIFRAME, RLELossless, "us", bits=8, frames=3),
            _Spec("OT", SECONDARY_CAPTURE, ExplicitVRLittleEndian, "sc", bits=8),
            _Spec("OT", SECONDARY_CAPTURE, JPEGLSLossless, "sc", bits=8),
            _Spec("OT", SECONDARY_CAPTURE, ExplicitVRBigEndian, "sc", bits=8),
        ],
    ),
]


def uid(*parts: object) -> str:
    digits = int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:12], "big")
    return _ROOT + str(digits)[:30]


def build_corpus(folder: Path, *, size: int = 32, seed: str = "corpus") -> list[CorpusInstance]:
    """Write the corpus under ``folder/<StudyInstanceUID>/``; dcmtk's tools must be installed."""
    out: list[CorpusInstance] = []
    for si, (description, specs) in enumerate(STUDIES):
        study = uid(seed, "study", si)
        sdir = folder / study
        sdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = sdir / ".work"
        tmp.mkdir(exist_ok=True, mode=0o700)
        for ii, spec in enumerate(specs):
            sop = uid(seed, "instance", si, ii)
            ds = _dataset(spec, study, uid(seed, "series", si, spec.modality, spec.kind), sop, si,
                          ii, description, size)  # fmt: skip
            plain = tmp / f"{ii}.dcm"
            pydicom.dcmwrite(plain, ds, enforce_file_format=True)
            final = sdir / f"{sop}.dcm"
            syntax = _convert(plain, final, spec.syntax)
            os.chmod(final, 0o600)
            stored = pydicom.dcmread(final, stop_before_pixels=True)
            assert str(stored.file_meta.TransferSyntaxUID) == syntax, (final, syntax)
            out.append(CorpusInstance(final, study, str(stored.SOPInstanceUID),
                                      spec.sop_class, syntax, spec.modality))  # fmt: skip
        shutil.rmtree(tmp)
    return out


def _convert(src: Path, dst: Path, syntax: str) -> str:
    """``src`` (Explicit VR LE) written to ``dst`` in ``syntax``; returns the syntax written."""
    tools: dict[str, list[str]] = {
        ImplicitVRLittleEndian: ["dcmconv", "+ti"],
        ExplicitVRBigEndian: ["dcmconv", "+tb"],
        DeflatedExplicitVRLittleEndian: ["dcmconv", "+td"],
        JPEGLosslessSV1: ["dcmcjpeg", "+e1"],
        JPEGBaseline8Bit: ["dcmcjpeg", "+eb", "+un"],
        JPEGExtended12Bit: ["dcmcjpeg", "+ee", "+un"],
        JPEGLSLossless: ["dcmcjpls", "+el"],
        JPEGLSNearLossless: ["dcmcjpls", "+en", "+un"],
        RLELossless: ["dcmcrle"],
    }
    if syntax == ExplicitVRLittleEndian:
        shutil.copyfile(src, dst)
        return syntax
    if syntax in (JPEG2000Lossless, JPEG2000):
        if not JPEG2000_AVAILABLE:
            shutil.copyfile(src, dst)
            return ExplicitVRLittleEndian
        _jpeg2000(src, dst, lossless=syntax == JPEG2000Lossless)
        return syntax
    cmd = [*tools[syntax], str(src), str(dst)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr[-400:]}")
    return syntax


def _jpeg2000(src: Path, dst: Path, *, lossless: bool) -> None:
    ds = pydicom.dcmread(src)
    dtype = numpy.uint16 if ds.BitsAllocated == 16 else numpy.uint8
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    arr = numpy.frombuffer(ds.PixelData, dtype=dtype).reshape(frames, ds.Rows, ds.Columns)
    level = 0 if lossless else 30  # imagecodecs: level 0 = reversible, else a PSNR target
    codestreams = [
        imagecodecs.jpeg2k_encode(f, level=level, codecformat="J2K", reversible=lossless)
        for f in arr
    ]
    ds.PixelData = encapsulate(codestreams)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = UID(JPEG2000Lossless if lossless else JPEG2000)
    if not lossless:
        ds.LossyImageCompression = "01"
    pydicom.dcmwrite(dst, ds, enforce_file_format=True)


def _dataset(
    spec: _Spec, study: str, series: str, sop: str, si: int, ii: int, desc: str, size: int
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(spec.sop_class)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = UID(spec.sop_class)
    ds.SOPInstanceUID = UID(sop)
    ds.PatientName = f"CORPUS^PATIENT{si + 1}"
    ds.PatientID = f"CORPUS{si + 1:03d}"
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = UID(study)
    ds.StudyDate = "20260301"
    ds.StudyTime = "101500"
    ds.StudyID = str(si + 1)
    ds.AccessionNumber = f"CORP{si + 1:04d}"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = desc
    ds.SeriesInstanceUID = UID(series)
    ds.SeriesNumber = 1 + [m for m, _ in _SERIES_ORDER].index(spec.kind) * 10 + si
    ds.Modality = spec.modality
    ds.SeriesDescription = f"{spec.modality} {spec.kind}"
    ds.InstanceNumber = ii + 1
    ds.Manufacturer = "pacs2xnat test bed"
    ds.ContentDate, ds.ContentTime = "20260301", "101500"
    _CONTENT[spec.kind](ds, spec, study, sop)
    if spec.kind not in ("plan", "struct", "sr"):
        _pixels(ds, spec, sop, size)
    return ds


def _pixels(ds: Dataset, spec: _Spec, sop: str, size: int) -> None:
    bits = spec.bits
    allocated = 8 if bits in (1, 8) else 16
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 1 if bits == 1 else allocated
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    if spec.frames > 1:
        ds.NumberOfFrames = spec.frames
    seed = int.from_bytes(hashlib.sha256(sop.encode()).digest()[:2], "little")
    n = size * size * spec.frames
    if bits == 1:
        ds.PixelData = bytes(((i * 7 + seed) & 0xFF) for i in range(n // 8))
        return
    top = (1 << bits) - 1
    values = [((i % size) * (top // size) + (i // size) * 3 + seed) % (top + 1) for i in range(n)]
    if allocated == 8:
        ds.PixelData = bytes(values)
    else:
        ds.PixelData = b"".join(v.to_bytes(2, "little") for v in values)
    if spec.modality in ("CT",):
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.ImagePositionPatient = [0, 0, ds.InstanceNumber * 2.5]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [1, 1]


def _plan(ds: Dataset, spec: _Spec, study: str, sop: str) -> None:
    ds.RTPlanLabel = "HN PLAN"
    ds.RTPlanDate, ds.RTPlanTime = "20260301", "101500"
    ds.RTPlanGeometry = "PATIENT"
    fg = Dataset()
    fg.FractionGroupNumber = 1
    fg.NumberOfFractionsPlanned = 35
    fg.NumberOfBeams = 0
    fg.NumberOfBrachyApplicationSetups = 0
    ds.FractionGroupSequence = Sequence([fg])


def _struct(ds: Dataset, spec: _Spec, study: str, sop: str) -> None:
    ds.StructureSetLabel = "HN OARS"
    ds.StructureSetDate, ds.StructureSetTime = "20260301", "101500"
    roi = Dataset()
    roi.ROINumber = 1
    roi.ROIName = "PAROTID_L"
    roi.ReferencedFrameOfReferenceUID = uid(study, "frame")
    roi.ROIGenerationAlgorithm = "MANUAL"
    ds.StructureSetROISequence = Sequence([roi])
    contour = Dataset()
    contour.ContourGeometricType = "CLOSED_PLANAR"
    contour.NumberOfContourPoints = 3
    contour.ContourData = [0.0, 0.0, 2.5, 10.0, 0.0, 2.5, 0.0, 10.0, 2.5]
    rc = Dataset()
    rc.ReferencedROINumber = 1
    rc.ROIDisplayColor = [255, 0, 0]
    rc.ContourSequence = Sequence([contour])
    ds.ROIContourSequence = Sequence([rc])


def _sr(ds: Dataset, spec: _Spec, study: str, sop: str) -> None:
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
    name = Dataset()
    name.CodeValue, name.CodingSchemeDesignator, name.CodeMeaning = "11528-7", "LN", "Report"
    ds.ConceptNameCodeSequence = Sequence([name])
    text = Dataset()
    text.RelationshipType, text.ValueType = "CONTAINS", "TEXT"
    text.TextValue = "Synthetic report: no abnormality (test data)."
    ds.ContentSequence = Sequence([text])


def _seg(ds: Dataset, spec: _Spec, study: str, sop: str) -> None:
    ds.SegmentationType = "BINARY"
    ds.ContentLabel = "PAROTID"
    seg = Dataset()
    seg.SegmentNumber = 1
    seg.SegmentLabel = "PAROTID_L"
    seg.SegmentAlgorithmType = "MANUAL"
    ds.SegmentSequence = Sequence([seg])


def _dose(ds: Dataset, spec: _Spec, study: str, sop: str) -> None:
    ds.DoseUnits, ds.DoseType, ds.DoseSummationType = "GY", "PHYSICAL", "PLAN"
    ds.DoseGridScaling = 0.001
    ds.GridFrameOffsetVector = [i * 2.5 for i in range(spec.frames)]
    ds.FrameIncrementPointer = 0x3004000C


def _none(ds: Dataset, spec: _Spec, study: str, sop: str) -> None:
    return None


_CONTENT: dict[str, Callable[[Dataset, _Spec, str, str], None]] = {
    "image": _none, "plan": _plan, "struct": _struct, "sr": _sr, "seg": _seg, "dose": _dose,
    "us": _none, "sc": _none,
}  # fmt: skip
_SERIES_ORDER = list(_CONTENT.items())

__all__ = ["JPEG2000_AVAILABLE", "LOSSY_SYNTAXES", "STUDIES", "CorpusInstance", "build_corpus"]
