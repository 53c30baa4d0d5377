"""A synthetic head-and-neck cancer cohort, deterministic by seed. Never real patients.

Each patient has an MRN, an NHS number (valid, except a few on purpose), a radiotherapy start
date (the reference date) and an imaging history around it: staging FDG PET-CT and CT, head and
neck MRI and CT, RT planning CT, dental X-rays, swallow studies, follow-up imaging, and some
unrelated studies the rules exclude. A few descriptions are on neither list (the triage report),
one patient has no NHS number, one an invalid one, one is withdrawn, two MRNs share one NHS
number (merged records), one name disagrees with PACS, one study has a placeholder date.

Shared by tests, benchmarks and the demo (``connectors/testbed/dicom_files.py`` writes the
DICOM files; ``spreadsheets`` writes the master list and rules workbook).
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from pydicom.uid import generate_uid

UID_PREFIX = "1.2.826.0.1.3680043.10.1234."  # a private-use style root; synthetic data only

FAMILY = [
    "SMITH",
    "JONES",
    "TAYLOR",
    "BROWN",
    "WILLIAMS",
    "WILSON",
    "JOHNSON",
    "DAVIES",
    "PATEL",
    "WRIGHT",
    "ROBINSON",
    "THOMPSON",
    "EVANS",
    "WALKER",
    "WHITE",
    "ROBERTS",
    "GREEN",
    "HALL",
    "WOOD",
    "JACKSON",
    "CLARKE",
    "KHAN",
    "HUGHES",
    "EDWARDS",
    "MURPHY",
    "O'BRIEN",
    "MÜLLER",
    "NÍ_BHRIAIN",
    "GARCÍA",
    "KOWALSKI",
]
GIVEN_M = [
    "JOHN",
    "DAVID",
    "JAMES",
    "PAUL",
    "MARK",
    "ANDREW",
    "PETER",
    "RICHARD",
    "SEÁN",
    "RAJESH",
    "TOMÁS",
    "ALI",
]
GIVEN_F = [
    "MARY",
    "SUSAN",
    "SARAH",
    "ANNE",
    "JANE",
    "KAREN",
    "EMMA",
    "SIOBHÁN",
    "PRIYA",
    "CHLOÉ",
    "AOIFE",
    "ZOË",
]

#: (description, modality list, series as (modality, description, instances), days from RT start
#: (min, max), probability per patient). Descriptions match seeds/study_description_rules.csv.
HISTORY: tuple[
    tuple[str, tuple[str, ...], tuple[tuple[str, str, int], ...], tuple[int, int], float], ...
] = (
    (
        "PET-CT FDG Skull base to mid thigh",
        ("CT", "PT"),
        (("CT", "CT AC", 12), ("PT", "PET AC", 12)),
        (-45, -20),
        0.95,
    ),
    ("CT Chest Abdomen Pelvis with contrast", ("CT",), (("CT", "Axial 2mm", 14),), (-40, -15), 0.7),
    ("CT Neck with contrast", ("CT",), (("CT", "Neck C+", 12),), (-50, -21), 0.8),
    (
        "MRI Neck with contrast",
        ("MR",),
        (("MR", "T1 AX", 8), ("MR", "T2 FS AX", 8), ("MR", "T1 C+ FS", 8)),
        (-42, -14),
        0.85,
    ),
    ("OPG", ("DX",), (("DX", "OPG", 1),), (-30, -10), 0.8),
    ("Dental Intraoral Periapical", ("IO",), (("IO", "PA", 2),), (-28, -8), 0.3),
    ("CT RT Planning Head and Neck", ("CT",), (("CT", "Planning 2.5mm", 16),), (-12, -3), 0.9),
    ("Videofluoroscopy Swallow", ("RF",), (("RF", "Swallow", 3),), (60, 120), 0.5),
    ("MRI Head and Neck", ("MR",), (("MR", "T2 AX", 8), ("MR", "DWI", 6)), (80, 130), 0.6),
    (
        "PET CT FDG Whole Body",
        ("CT", "PT"),
        (("CT", "CT AC", 12), ("PT", "PET AC", 12)),
        (85, 110),
        0.7,
    ),
    ("CT Neck with contrast", ("CT",), (("CT", "Neck C+", 12),), (170, 200), 0.5),
    ("US Neck", ("US",), (("US", "Neck", 4),), (150, 300), 0.4),
    ("MRI Knee Right", ("MR",), (("MR", "PD FS SAG", 6),), (-700, 700), 0.15),
    ("MG Mammogram Bilateral", ("MG",), (("MG", "CC/MLO", 4),), (-700, 700), 0.12),
    ("XR Chest PA", ("CR",), (("CR", "PA", 1),), (-60, 400), 0.3),
    # on neither list: the triage report
    ("CT Neck Chest Recon", ("CT",), (("CT", "Recon 1mm", 10),), (-35, -15), 0.06),
    ("MR Pharynx Dynamic", ("MR",), (("MR", "Dyn", 6),), (100, 160), 0.05),
)


@dataclass(frozen=True)
class Series:
    series_instance_uid: str
    series_number: int
    modality: str
    description: str
    n_instances: int


@dataclass(frozen=True)
class Study:
    mrn: str
    study_instance_uid: str
    accession_number: str
    study_date: dt.date | None
    study_time: dt.time
    description: str
    modalities: tuple[str, ...]
    series: tuple[Series, ...]
    placeholder_date: str | None = None  # a DA value such as "19000101" sent instead of the date

    @property
    def n_instances(self) -> int:
        return sum(s.n_instances for s in self.series)

    @property
    def dicom_study_date(self) -> str:
        if self.placeholder_date is not None:
            return self.placeholder_date
        return self.study_date.strftime("%Y%m%d") if self.study_date else ""


@dataclass(frozen=True)
class Patient:
    mrn: str
    nhs_number: str | None
    family: str
    given: str
    sex: str
    birth_date: dt.date
    reference_date: dt.date
    status: str = "active"
    pacs_name: str | None = None  # when PACS holds another spelling than the master list

    @property
    def dicom_name(self) -> str:
        return self.pacs_name or f"{self.family}^{self.given}"

    @property
    def list_name(self) -> str:
        """As the master list writes it: "Family, Given" in title case."""
        fam = self.family.replace("_", " ").title()
        return f"{fam}, {self.given.title()}"


@dataclass
class Cohort:
    seed: int
    patients: list[Patient]
    studies: list[Study] = field(default_factory=list)

    def patient(self, mrn: str) -> Patient:
        return next(p for p in self.patients if p.mrn == mrn)

    def studies_of(self, mrn: str) -> list[Study]:
        return [s for s in self.studies if s.mrn == mrn]

    def studies_between(self, start: dt.date | None, end: dt.date | None) -> list[Study]:
        """Studies whose real date is within [start, end] (placeholder dates always included)."""
        out = []
        for s in self.studies:
            if s.study_date is None:
                out.append(s)
                continue
            if (start is None or s.study_date >= start) and (end is None or s.study_date <= end):
                out.append(s)
        return out

    def iter_instances(self, study: Study) -> Iterator[tuple[Series, int, str]]:
        """(series, instance number, SOP Instance UID) for every instance of a study."""
        for se in study.series:
            for i in range(1, se.n_instances + 1):
                yield se, i, generate_uid(UID_PREFIX, [se.series_instance_uid, str(i)])


def nhs_check_digit(first9: str) -> int | None:
    """The modulus-11 check digit for nine digits; None when it would be 10 (unusable)."""
    total = sum(int(d) * (10 - i) for i, d in enumerate(first9))
    check = (11 - total % 11) % 11
    return None if check == 10 else check


def _valid_nhs(rng: random.Random) -> str:
    while True:
        first9 = "9" + "".join(str(rng.randrange(10)) for _ in range(8))  # 9xx: test range
        check = nhs_check_digit(first9)
        if check is not None:
            return first9 + str(check)


def make_cohort(
    n_patients: int = 40,
    seed: int = 7,
    *,
    as_of: dt.date | None = None,
    with_anomalies: bool = True,
) -> Cohort:
    """A cohort whose imaging histories run up to ``as_of`` (default today) and no further.

    With ``with_anomalies`` (and at least 8 patients) the cohort holds one of each case the
    pipeline must handle: no NHS number, an invalid NHS number, a withdrawn patient, two MRNs
    merged to one NHS number, one MRN given two NHS numbers on the list is *not* generated here
    (tests build that one by hand), a PACS name that disagrees, a placeholder study date, an MRN
    with leading zeros.
    """
    rng = random.Random(seed)
    as_of = as_of or dt.date.today()
    patients: list[Patient] = []
    used_mrn: set[str] = set()
    for i in range(n_patients):
        while True:
            mrn = f"{rng.randrange(10**7):08d}" if i % 5 == 0 else f"RA{rng.randrange(10**6):06d}"
            if mrn not in used_mrn:
                used_mrn.add(mrn)
                break
        sex = rng.choice("MF")
        given = rng.choice(GIVEN_M if sex == "M" else GIVEN_F)
        ref = as_of - dt.timedelta(days=rng.randrange(60, 3 * 365))
        birth = dt.date(rng.randrange(1940, 1990), rng.randrange(1, 13), rng.randrange(1, 29))
        patients.append(Patient(mrn, _valid_nhs(rng), rng.choice(FAMILY), given, sex, birth, ref))
    if with_anomalies and n_patients >= 8:
        patients[1] = replace(patients[1], nhs_number=None)
        bad = patients[2].nhs_number or "9000000000"
        patients[2] = replace(patients[2], nhs_number=bad[:9] + str((int(bad[9]) + 1) % 10))
        patients[3] = replace(patients[3], status="withdrawn")
        patients[5] = replace(patients[5], nhs_number=patients[4].nhs_number)  # merged records
        patients[6] = replace(
            patients[6], pacs_name=f"{patients[6].family}^{patients[6].given[:1]}X"
        )
        patients[7] = replace(patients[7], mrn="00" + patients[7].mrn[-6:].replace("A", "0"))
    cohort = Cohort(seed=seed, patients=patients)
    accession_counter = 0
    for p in patients:
        for n, (desc, mods, series, (lo, hi), prob) in enumerate(HISTORY):
            if rng.random() > prob:
                continue
            date = p.reference_date + dt.timedelta(days=rng.randint(lo, hi))
            if date > as_of:
                continue
            accession_counter += 1
            study_uid = generate_uid(UID_PREFIX, [str(seed), p.mrn, str(n), desc])
            cohort.studies.append(
                Study(
                    mrn=p.mrn,
                    study_instance_uid=study_uid,
                    accession_number=f"RJ{seed % 100:02d}{accession_counter:06d}",
                    study_date=date,
                    study_time=dt.time(rng.randrange(8, 18), rng.randrange(60), rng.randrange(60)),
                    description=desc,
                    modalities=mods,
                    series=tuple(
                        Series(
                            generate_uid(UID_PREFIX, [study_uid, str(k)]),
                            k + 1,
                            mod,
                            sdesc,
                            count,
                        )
                        for k, (mod, sdesc, count) in enumerate(series)
                    ),
                )
            )
    if with_anomalies and cohort.studies:
        first = cohort.studies[0]
        cohort.studies[0] = replace(first, placeholder_date="19000101", study_date=None)
    return cohort


def add_new_studies(cohort: Cohort, since: dt.date, until: dt.date, seed: int = 0) -> list[Study]:
    """Studies performed in (since, until] for ongoing patients: the next quarter's imaging."""
    rng = random.Random(cohort.seed * 1000 + seed)
    new: list[Study] = []
    for p in cohort.patients:
        if rng.random() > 0.5:
            continue
        date = since + dt.timedelta(days=rng.randint(1, max(1, (until - since).days)))
        k = len(cohort.studies) + len(new)
        uid = generate_uid(UID_PREFIX, [str(cohort.seed), p.mrn, "followup", str(k)])
        new.append(
            Study(
                mrn=p.mrn,
                study_instance_uid=uid,
                accession_number=f"RJ{cohort.seed % 100:02d}{900000 + k:06d}",
                study_date=date,
                study_time=dt.time(10, 0, 0),
                description="MRI Neck with contrast",
                modalities=("MR",),
                series=(Series(generate_uid(UID_PREFIX, [uid, "0"]), 1, "MR", "T2 AX", 6),),
            )
        )
    cohort.studies.extend(new)
    return new


def raw_master_rows(
    cohort: Cohort, run_id: str, loaded_at: dt.datetime, *, sheet: str | None = "Sheet1"
) -> list[dict[str, object]]:
    """The cohort's master list as ``patients import`` appends it to ``raw.master_patients``:
    for tests and benchmarks that fill the warehouse directly."""
    return [
        {
            "run_id": run_id,
            "loaded_at": loaded_at,
            "source_file": "master.xlsx",
            "source_sha256": "0" * 64,
            "source_sheet": sheet,
            "source_row": i + 2,
            "mrn": p.mrn,
            "nhs_number": p.nhs_number,
            "reference_date": p.reference_date,
            "status": p.status,
            "patient_name": p.list_name,
            "birth_date": p.birth_date,
        }
        for i, p in enumerate(cohort.patients)
    ]
