"""The adaptive throttle against the in-process PACS made busy (``tests/support/busy_pacs``),
with the stand-in XNAT: a PACS that slows down and refuses (0xA700) part way makes the loader
back off, pause and recover, logging each change, and it still loads every study once; a PACS
that keeps up sees every configured association. The throttle's waits use a fake clock."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import pytest

from connectors.clock import use_clock
from connectors.load.runner import run_load
from connectors.pacs import throttle
from connectors.pacs.throttle import is_refusal
from connectors.testbed.cohort import Cohort
from connectors.warehouse.runs import RunContext
from tests.support.busy_pacs import BusyPacs
from tests.support.fake_clock import FakeClock
from tests.support.load_helpers import attempts, load_settings_for, pick_studies, write_manifest
from tests.support.xnat_fixtures import StandinHandle

OUT_OF_RESOURCES = 0xA700


def _load(settings: Any) -> dict[str, Any]:
    rc = RunContext(settings=settings, command="load", arguments=[])
    with use_clock(FakeClock(dt.datetime(2026, 12, 1, 20, 0))):
        return run_load(rc, "direct", build_manifest=False, sync_first=False)


def test_refusals_are_recognised() -> None:
    assert is_refusal("study 1.2: the PACS answered with status 0xA700; 0 of 3 files received")
    assert is_refusal("PACS X at h:1 rejected the association: check ...")
    assert is_refusal("study 1.2: WADO-RS answered HTTP 503")
    assert not is_refusal("study 1.2: the PACS answered with status 0xC000; 0 of 3 received")


def test_a_pacs_that_slows_down_and_refuses_makes_the_loader_back_off_and_recover(
    pacs_dicom_folder: Path,
    pacs_cohort: Cohort,
    standin_xnat: StandinHandle,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Six normal answers, then two far slower than the median (both associations), then two
    0xA700 refusals: two associations become one, then a pause, then after five normal answers
    two again."""

    monkeypatch.setattr(throttle, "SLOW_FLOOR_SECONDS", 0.5)  # a shorter test, same logic

    def fault(k: int) -> tuple[float, int | None]:
        if k in (6, 7):
            return throttle.SLOW_FLOOR_SECONDS + 0.5, None
        return (0.0, OUT_OF_RESOURCES) if k in (9, 10) else (0.0, None)

    studies = pick_studies(pacs_cohort, 16)
    with BusyPacs(pacs_dicom_folder, fault) as pacs:
        settings = load_settings_for(
            tmp_path, pacs, standin_xnat, pacs={"max_associations": 2, "backoff_pause_seconds": 30}
        )
        write_manifest(settings, pacs_cohort, studies)
        with caplog.at_level(logging.DEBUG, logger="connectors.pacs.throttle"):
            summary = _load(settings)
    assert (summary["loaded"], summary["failed"]) == (16, 0)
    assert pacs.answered.count(OUT_OF_RESOURCES) == 2
    changes = summary["throttle_changes"]
    assert changes[0]["associations"] == 1
    assert "running median" in str(changes[0]["reason"])
    pauses = [c for c in changes if "pause_seconds" in c]
    assert pauses
    assert all("0xA700" in str(c["reason"]) for c in pauses)
    assert changes[-1]["associations"] == 2
    assert "recovering" in str(changes[-1]["reason"])
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("PACS throttle")]
    assert len(logged) == len(changes)  # each change logged
    loaded = [a for a in attempts(settings) if a["outcome"] == "loaded"]
    assert sorted(a["study_instance_uid"] for a in loaded) == sorted(
        s.study_instance_uid for s in studies
    )


def test_a_pacs_that_keeps_up_sees_every_configured_association(
    pacs_dicom_folder: Path, pacs_cohort: Cohort, standin_xnat: StandinHandle, tmp_path: Path
) -> None:
    studies = pick_studies(pacs_cohort, 5)
    with BusyPacs(pacs_dicom_folder, lambda k: (0.3, None)) as pacs:
        settings = load_settings_for(tmp_path, pacs, standin_xnat, pacs={"max_associations": 2})
        write_manifest(settings, pacs_cohort, studies)
        summary = _load(settings)
    assert (summary["loaded"], summary["failed"]) == (5, 0)
    assert summary["throttle_changes"] == []
    assert pacs.peak == summary["associations_peak"] == 2


def test_the_rate_caps_space_the_retrievals_on_the_clock() -> None:
    """60 studies an hour: a minute between starts; 1 MB/s: after 10 MB, 10 s before the
    next. The fake clock's sleep only moves time."""
    from connectors.config import PacsConfig
    from connectors.pacs.throttle import Throttle

    clock = FakeClock(dt.datetime(2026, 12, 1, 20, 0))
    per_hour = Throttle(PacsConfig(max_studies_per_hour=60), clock)
    for _ in range(3):
        with per_hour.slot():
            pass
    assert clock.slept == pytest.approx(120.0)

    clock = FakeClock(dt.datetime(2026, 12, 1, 20, 0))
    per_second = Throttle(PacsConfig(max_mb_per_second=1.0), clock)
    with per_second.slot() as ticket:
        pass
    per_second.answered(ticket, 0.5, 10, 10_000_000)
    with per_second.slot():
        pass
    assert clock.slept == pytest.approx(10.0)
    assert per_second.changes == []  # caps are not back-offs
