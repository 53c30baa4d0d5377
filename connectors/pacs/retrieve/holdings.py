"""What a study holds, asked before retrieving it, and the presentation contexts that let the PACS
send every instance as it stores it.

A C-GET's storage contexts are proposed by us; the PACS accepts one transfer syntax per context
and must transcode (or refuse, 0xC000) every instance stored otherwise. So each SOP class the
study holds gets one context per transfer syntax (the stored ones first when the PACS says
which, never a lossy one it does not store), within the 128 contexts an association may carry.

``learn(assoc, uid)`` (``StudyFailed``, transient, when the PACS closes the association meanwhile)
asks, cheapest first: the study's SOP Classes in Study (Orthanc answers);
else the series' SOP Class UID and Modality, and the image level's SOP Class UID and Transfer
Syntax UID (0002,0010) when the series level gave no class; a modality only gives its family of
SOP classes (``MODALITY_CLASSES``); nothing at all gives pynetdicom's 120 common storage classes.
``plan(holdings)`` splits a study across associations (series by series) when its classes need
more contexts than one association carries, and narrows to several syntaxes per context only
when the series are unknown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import StoragePresentationContexts
from pynetdicom.presentation import PresentationContext

from connectors.pacs.retrieve.dimse import study_matches
from connectors.pacs.storage import LOSSY, TRANSFER_SYNTAXES

#: contexts one C-GET association may carry for storage: 128 less the Get and Find models
STORAGE_BUDGET = 126
LOSSLESS_SYNTAXES = [ts for ts in TRANSFER_SYNTAXES if ts not in LOSSY]
_TS_TAG = 0x00020010

_IMAGE = "1.2.840.10008.5.1.4.1.1."
#: a modality's usual storage SOP classes (when the PACS names no SOP class)
MODALITY_CLASSES: dict[str, tuple[str, ...]] = {
    "CT": ("2", "2.1", "2.2"),
    "MR": ("4", "4.1", "4.4"),
    "PT": ("128", "130"),
    "NM": ("20",),
    "US": ("6.1", "3.1", "6.2"),
    "CR": ("1",),
    "DX": ("1.1", "1.1.1"),
    "MG": ("1.2", "1.2.1", "13.1.3"),
    "IO": ("1.3", "1.3.1"),
    "XA": ("12.1", "12.1.1"),
    "RF": ("12.2", "12.2.1"),
    "RTIMAGE": ("481.1",),
    "RTDOSE": ("481.2",),
    "RTSTRUCT": ("481.3",),
    "RTPLAN": ("481.5", "481.8"),
    "RTRECORD": ("481.4",),
    "SR": ("88.11", "88.22", "88.33", "88.34", "88.59", "88.67"),
    "SEG": ("66.4", "66.5"),
    "REG": ("66.1", "66.3"),
    "KO": ("88.59",),
    "PR": ("11.1", "11.2"),
    "DOC": ("104.1",),
    "OT": ("7", "7.1", "7.2", "7.3", "7.4"),
    "SC": ("7", "7.1", "7.2", "7.3", "7.4"),
    "XC": ("77.1.4",),
    "ES": ("77.1.1",),
    "OP": ("77.1.5.1",),
}
ALWAYS = (_IMAGE + "7",)  # secondary capture: any modality's series may hold one


@dataclass
class StudyHoldings:
    """What the PACS told us about one study (empty sets: it did not say)."""

    sop_classes: set[str] = field(default_factory=set)
    #: SOP class -> transfer syntaxes stored, only when the PACS answers (0002,0010)
    syntaxes: dict[str, set[str]] = field(default_factory=dict)
    #: SOP Instance UID -> its stored transfer syntax, when the PACS answers (0002,0010)
    instance_syntax: dict[str, str] = field(default_factory=dict)
    #: Series Instance UID -> the SOP classes it holds (for splitting across associations)
    series_classes: dict[str, set[str]] = field(default_factory=dict)
    source: str = "default"  # study | series | image | modality | default


@dataclass(frozen=True)
class ContextGroup:
    """The storage contexts of one association, and the series it retrieves (None: the study)."""

    contexts: tuple[tuple[str, tuple[str, ...]], ...]
    series: tuple[str, ...] | None = None

    def presentation_contexts(self) -> list[PresentationContext]:
        out = []
        for sop, syntaxes in self.contexts:
            cx = PresentationContext()
            cx.abstract_syntax = sop
            cx.transfer_syntax = list(syntaxes)
            out.append(cx)
        return out

    @property
    def sop_classes(self) -> list[str]:
        return sorted({sop for sop, _ in self.contexts})


def _find(assoc: Any, query: Dataset) -> list[Dataset]:
    """The matches (none when the PACS cannot be asked); ``StudyFailed`` (transient) if the
    PACS closed the association meanwhile: never guessed holdings for a study not asked about."""
    asking = f"the {query.QueryRetrieveLevel}-level C-FIND asking what the study holds"
    return study_matches(assoc, query, asking) or []


def _values(ds: Dataset, keyword: str) -> list[str]:
    v = ds.get(keyword)
    if v in (None, ""):
        return []
    items = [v] if isinstance(v, str) or not hasattr(v, "__iter__") else list(v)
    return [str(x).strip() for x in items if str(x).strip()]


def learn(assoc: Any, uid: str) -> StudyHoldings:
    """Ask the PACS what ``uid`` holds, on ``assoc`` (which has a Study Root Find context)."""
    h = StudyHoldings()
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.StudyInstanceUID = uid
    q.SOPClassesInStudy = ""
    for ds in _find(assoc, q):
        h.sop_classes.update(_values(ds, "SOPClassesInStudy"))
    if h.sop_classes:
        h.source = "study"
        return h
    modalities: set[str] = set()
    q = Dataset()
    q.QueryRetrieveLevel = "SERIES"
    q.StudyInstanceUID = uid
    q.SeriesInstanceUID = ""
    q.Modality = ""
    q.SOPClassUID = ""
    for ds in _find(assoc, q):
        classes = set(_values(ds, "SOPClassUID"))
        series = str(ds.get("SeriesInstanceUID", "") or "")
        modalities.update(_values(ds, "Modality"))
        if classes and series:
            h.series_classes.setdefault(series, set()).update(classes)
        h.sop_classes.update(classes)
    if h.sop_classes:
        h.source = "series"
        return h
    _learn_images(assoc, uid, h)
    if h.sop_classes:
        return h
    for m in modalities:
        h.sop_classes.update(_IMAGE + s for s in MODALITY_CLASSES.get(m.upper(), ()))
    if h.sop_classes:
        h.sop_classes.update(ALWAYS)
        h.source = "modality"
    return h


def _learn_images(assoc: Any, uid: str, h: StudyHoldings) -> None:
    q = Dataset()
    q.QueryRetrieveLevel = "IMAGE"
    q.StudyInstanceUID = uid
    q.SeriesInstanceUID = ""
    q.SOPInstanceUID = ""
    q.SOPClassUID = ""
    q.add_new(_TS_TAG, "UI", "")
    for ds in _find(assoc, q):
        sop = str(ds.get("SOPClassUID", "") or "").strip()
        if not sop:
            continue
        h.source = "image"
        h.sop_classes.add(sop)
        series = str(ds.get("SeriesInstanceUID", "") or "")
        if series:
            h.series_classes.setdefault(series, set()).add(sop)
        ts = str(ds[_TS_TAG].value).strip() if _TS_TAG in ds and ds[_TS_TAG].value else ""
        if ts:
            h.syntaxes.setdefault(sop, set()).add(ts)
            h.instance_syntax[str(ds.get("SOPInstanceUID", ""))] = ts


def syntaxes_for(h: StudyHoldings, sop: str) -> list[str]:
    """The transfer syntaxes proposed for ``sop``: stored ones first; lossy only if stored."""
    stored = sorted(h.syntaxes.get(sop, set()))
    if stored:
        return stored + [ts for ts in LOSSLESS_SYNTAXES if ts not in stored]
    return list(TRANSFER_SYNTAXES)  # unknown: a lossy-stored instance needs its own syntax


def default_classes() -> list[str]:
    return [str(cx.abstract_syntax) for cx in StoragePresentationContexts]


def plan(h: StudyHoldings, budget: int = STORAGE_BUDGET) -> list[ContextGroup]:
    """The associations (their storage contexts) a C-GET of the study needs; see the module."""
    classes = sorted(h.sop_classes) or default_classes()
    per_class = {sop: syntaxes_for(h, sop) for sop in classes}
    need = sum(len(v) for v in per_class.values())
    if need <= budget:
        return [ContextGroup(_one_each(per_class, classes))]
    if h.series_classes and all(
        sum(len(per_class.get(s, ())) for s in cls) <= budget for cls in h.series_classes.values()
    ):
        return _split_by_series(h, per_class, budget)
    return [ContextGroup(_narrowed(per_class, classes, budget))]


def _one_each(per_class: dict[str, list[str]], classes: list[str]) -> tuple[Any, ...]:
    return tuple((sop, (ts,)) for sop in classes for ts in per_class[sop])


def _split_by_series(
    h: StudyHoldings, per_class: dict[str, list[str]], budget: int
) -> list[ContextGroup]:
    groups: list[tuple[set[str], list[str]]] = []
    for series, cls in sorted(h.series_classes.items(), key=lambda kv: sorted(kv[1])):
        for g_classes, g_series in groups:
            if sum(len(per_class[s]) for s in g_classes | cls) <= budget:
                g_classes.update(cls)
                g_series.append(series)
                break
        else:
            groups.append((set(cls), [series]))
    return [ContextGroup(_one_each(per_class, sorted(c)), tuple(s)) for c, s in groups]


def _narrowed(per_class: dict[str, list[str]], classes: list[str], budget: int) -> tuple[Any, ...]:
    """Several syntaxes per context (each class gets ``budget // classes`` contexts, at least
    one), stored/lossless first: the PACS picks one per context."""
    k = max(1, budget // len(classes))
    out: list[tuple[str, tuple[str, ...]]] = []
    for sop in classes[:budget]:
        ts = per_class[sop]
        size = -(-len(ts) // k)
        out.extend((sop, tuple(ts[i : i + size])) for i in range(0, len(ts), size))
    return tuple(out[:budget])
