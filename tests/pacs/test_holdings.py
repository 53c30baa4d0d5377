"""The presentation contexts a C-GET proposes from what the study holds (``holdings.plan``)."""

from __future__ import annotations

from pydicom.uid import (
    JPEG2000,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
)

from connectors.pacs.retrieve.holdings import (
    LOSSLESS_SYNTAXES,
    LOSSY,
    STORAGE_BUDGET,
    StudyHoldings,
    default_classes,
    plan,
)
from connectors.pacs.storage import TRANSFER_SYNTAXES

CT, MR, RTDOSE = (
    "1.2.840.10008.5.1.4.1.1.2",
    "1.2.840.10008.5.1.4.1.1.4",
    "1.2.840.10008.5.1.4.1.1.481.2",
)


def test_each_class_gets_one_context_per_syntax_when_the_pacs_names_the_classes() -> None:
    (group,) = plan(StudyHoldings(sop_classes={CT, MR}, source="study"))
    assert group.series is None  # the whole study on one association
    for sop in (CT, MR):
        mine = [ts for s, ts in group.contexts if s == sop]
        assert all(len(ts) == 1 for ts in mine)
        assert [ts[0] for ts in mine] == list(TRANSFER_SYNTAXES)  # unknown: lossy ones too


def test_the_stored_syntax_comes_first_and_no_lossy_one_it_does_not_store() -> None:
    h = StudyHoldings(sop_classes={CT}, syntaxes={CT: {JPEG2000Lossless}}, source="image")
    (group,) = plan(h)
    proposed = [ts[0] for _, ts in group.contexts]
    assert proposed[0] == JPEG2000Lossless
    assert not set(proposed) & LOSSY
    assert set(proposed) == set(LOSSLESS_SYNTAXES)
    h.syntaxes[CT].add(JPEGBaseline8Bit)  # stored lossy: proposed as is
    assert JPEGBaseline8Bit in [ts[0] for _, ts in plan(h)[0].contexts]


def test_a_study_needing_more_than_128_contexts_is_split_by_series() -> None:
    classes = default_classes()[:20]  # 20 classes x 12 syntaxes = 240 contexts
    h = StudyHoldings(sop_classes=set(classes), source="series")
    h.series_classes = {f"1.2.3.{i}": {c} for i, c in enumerate(classes)}
    groups = plan(h)
    assert len(groups) == 2
    assert all(len(g.contexts) <= STORAGE_BUDGET for g in groups)
    series = [s for g in groups for s in g.series or ()]
    assert sorted(series) == sorted(h.series_classes)  # every series once
    for g in groups:  # each series' class is on the association that retrieves it
        assert {c for s in g.series or () for c in h.series_classes[s]} <= set(g.sop_classes)


def test_unknown_series_narrow_to_several_syntaxes_per_context() -> None:
    classes = default_classes()[:20]
    (group,) = plan(StudyHoldings(sop_classes=set(classes), source="modality"))
    assert len(group.contexts) <= STORAGE_BUDGET
    for sop in classes:  # every syntax still proposed for every class, lossless first
        mine = [ts for s, cx in group.contexts if s == sop for ts in cx]
        assert sorted(mine) == sorted(TRANSFER_SYNTAXES)


def test_nothing_known_proposes_pynetdicoms_common_classes() -> None:
    (group,) = plan(StudyHoldings())
    assert len(group.contexts) <= STORAGE_BUDGET
    assert set(group.sop_classes) == set(default_classes())
    assert {RTDOSE, CT, MR} <= set(group.sop_classes)
    assert ExplicitVRLittleEndian in {ts for _, cx in group.contexts for ts in cx}
    assert JPEGLSLossless in {ts for _, cx in group.contexts for ts in cx}
    assert JPEG2000 in {ts for _, cx in group.contexts for ts in cx}
