"""``[pacs] windows``: parsed and validated, and a query and a load that meet a window's end
(the clock is a fake one: no test sleeps). The load runs against real Orthanc and the
stand-in XNAT."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import re
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import pytest

from connectors.clock import use_clock
from connectors.config import settings_from_dict
from connectors.errors import ConfigError
from connectors.load.runner import run_load
from connectors.pacs.query import run_query
from connectors.testbed.cohort import Cohort
from connectors.testbed.orthanc import free_port
from connectors.warehouse.runs import RunContext
from connectors.windows import parse_windows
from tests.support.fake_clock import FakeClock
from tests.support.fault_proxy import FaultProxy
from tests.support.load_helpers import (
    attempts,
    expected_files,
    load_settings_for,
    pick_studies,
    write_manifest,
)
from tests.support.real_parts import require_binary
from tests.support.xnat_fixtures import StandinHandle

MOVE_AET = "P2X_WINDOWS"  # our storage SCP as Orthanc knows it (C-MOVE)
OFF_PEAK = ("Mon-Fri 19:00-07:00", "Sat-Sun 00:00-24:00")
MONDAY = dt.date(2026, 11, 30)
MINUTE = dt.timedelta(minutes=1)


def at(day: int, hhmm: str) -> dt.datetime:
    h, m = (int(x) for x in hhmm.split(":"))
    return dt.datetime.combine(MONDAY + dt.timedelta(days=day), dt.time(h, m))


def test_off_peak_windows_open_at_night_and_all_weekend() -> None:
    w = parse_windows(OFF_PEAK)
    opens = [w.open_at(at(0, t)) for t in ("06:59", "07:00", "18:59", "19:00")]
    assert opens == [True, False, False, True]
    assert w.open_at(at(5, "12:00"))
    assert w.open_at(at(6, "23:59"))
    assert w.next_open(at(0, "07:00")) == at(0, "19:00")
    assert w.next_open(at(0, "19:30")) == at(0, "19:30")  # open now
    # Friday night runs into the weekend and the weekend into Monday morning: one window
    assert w.closes_at(at(4, "20:00")) == at(7, "07:00")
    assert parse_windows(["Fri-Mon 10:00-12:00"]).next_open(at(1, "13:00")) == at(4, "10:00")
    assert parse_windows([]).open_at(at(0, "12:00"))


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("Mon-Fri 7pm-7am", "not 'DAYS HH:MM-HH:MM'"),
        ("Mon-Fry 19:00-07:00", "'mon-fry' is not a day"),
        ("Mon 19:00-25:00", "times run from 00:00 to 24:00"),
        ("Mon 10:00-10:00", "the window is empty"),
    ],
)
def test_a_bad_window_is_a_config_error_naming_the_key(entry: str, why: str) -> None:
    with pytest.raises(ConfigError) as e:
        settings_from_dict({"pacs": {"windows": [entry]}}, source=Path("/etc/p.toml"))
    assert str(e.value).startswith(f"/etc/p.toml: [pacs] windows entry {entry!r}: {why}")
    with pytest.raises(ConfigError, match=r"\[pacs\] windows must be a list of strings"):
        settings_from_dict({"pacs": {"windows": "Mon-Fri 19:00-07:00"}})


def test_query_outside_a_window_with_no_wait_never_touches_the_pacs(tmp_path: Path) -> None:
    """Nothing listens on the PACS port: asking it would be exit 3. Outside the window with
    --no-wait the query stops first, saying until when."""
    base = settings_from_dict(
        {
            "pacs": {"port": free_port(), "windows": list(OFF_PEAK), "wait_for_window": False},
            "warehouse": {"path": str(tmp_path / "wh.duckdb")},
        }
    )
    rc = RunContext(settings=base, command="query", arguments=[])
    with use_clock(FakeClock(at(0, "12:00"))):
        rc.start()
        try:
            summary = run_query(rc)
        finally:
            rc.finish("paused", 0)
    assert summary["paused_until"] == at(0, "19:00").isoformat(timespec="minutes")
    assert summary["patients_queried"] == 0


def _rc(settings: Any) -> RunContext:
    return RunContext(settings=settings, command="load", arguments=[])


def _imports(standin: StandinHandle) -> int:
    return sum(1 for r in standin.server.app.request_log if r[1] == "/data/services/import")


@pytest.mark.orthanc
def test_a_load_across_a_window_end_pauses_and_resumes_loading_each_study_once(
    orthanc: Any,
    pacs_cohort: Cohort,
    standin_xnat: StandinHandle,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The clock passes 07:00 Monday during the loader's work (C-GET: during a study, which
    then pauses part way): the loader waits until 19:00 (the fake clock's sleep), then loads
    the rest; each study once, the pause logged and in the summary (what --json prints)."""
    studies = pick_studies(pacs_cohort, 4)
    settings = load_settings_for(
        tmp_path, orthanc, standin_xnat, pacs={"windows": OFF_PEAK, "max_associations": 1}
    )
    write_manifest(settings, pacs_cohort, studies)
    clock = FakeClock(at(0, "06:58"), step=MINUTE)
    with use_clock(clock), caplog.at_level(logging.WARNING, logger="connectors.windows"):
        summary = run_load(_rc(settings), "direct", build_manifest=False, sync_first=False)
    assert (summary["loaded"], summary["failed"]) == (4, 0)
    assert [p["until"] for p in summary["pauses"]] == ["2026-11-30T19:00"]
    assert "paused_until" not in summary
    assert clock.slept >= 11 * 3600
    recorded = attempts(settings)
    assert sorted(a["study_instance_uid"] for a in recorded) == sorted(
        s.study_instance_uid for s in studies
    )
    assert _imports(standin_xnat) == 4
    messages = [r.getMessage() for r in caplog.records]
    assert any("paused until 2026-11-30 19:00" in m for m in messages)
    assert any("resuming" in m for m in messages)


@pytest.mark.orthanc
def test_no_wait_stops_at_the_window_end_and_the_rerun_loads_only_the_rest(
    orthanc: Any,
    pacs_cohort: Cohort,
    standin_xnat: StandinHandle,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """C-GET, --no-wait: the first study (2 instances) loads, the window ends during the
    second (a C-CANCEL; what arrived is kept), the third is not started. The rerun loads the
    second with only its missing instances, and the third; each study sent once."""
    studies = pick_studies(pacs_cohort, 3, offset=4)
    settings = load_settings_for(
        tmp_path, orthanc, standin_xnat, pacs={"windows": OFF_PEAK, "max_associations": 1}
    )
    settings = _over("c-get", settings, orthanc, wait=False)
    write_manifest(settings, pacs_cohort, studies)
    before = _imports(standin_xnat)
    with use_clock(FakeClock(at(0, "06:56"), step=MINUTE)):
        first = run_load(_rc(settings), "direct", build_manifest=False, sync_first=False)
    assert (first["loaded"], first["not_started"]) == (1, 2)
    assert first["paused_until"] == "2026-11-30T19:00"
    assert [a["study_instance_uid"] for a in attempts(settings)] == [studies[0].study_instance_uid]
    part_way = studies[1].study_instance_uid
    kept = len(list((settings.work_dir / "paused" / part_way).iterdir()))
    assert 0 < kept <= expected_files(studies[1])  # (the instance in flight may be the last)
    # the rerun's sync and build leave the loaded study out of the manifest
    write_manifest(settings, pacs_cohort, studies[1:])
    caplog.clear()
    with (
        use_clock(FakeClock(at(0, "19:05"), step=MINUTE)),
        caplog.at_level(logging.INFO, logger="connectors.pacs.retrieve.engine"),
    ):
        second = run_load(_rc(settings), "direct", build_manifest=False, sync_first=False)
    assert (second["loaded"], second["failed"], second.get("pauses")) == (2, 0, [])
    assert _retrievals(caplog) == {
        part_way: (expected_files(studies[1]), kept),  # only the rest asked for
        studies[2].study_instance_uid: (expected_files(studies[2]), 0),
    }
    assert _imports(standin_xnat) - before == 3  # each study sent once
    assert sorted(a["study_instance_uid"] for a in attempts(settings)) == sorted(
        s.study_instance_uid for s in studies
    )


def _over(protocol: str, settings: Any, orthanc: Any, *, wait: bool = True) -> Any:
    """The settings over WADO-RS ("dicomweb") or pynetdicom C-GET or C-MOVE (to our storage
    SCP, registered in Orthanc) in this process ("c-get", "c-move"), or dcmtk's getscu
    ("dcmtk-c-get"), or dcmtk's movescu into its storescp ("dcmtk-c-move", destination set by
    the test)."""
    how: dict[str, Any] = {"retrieve": protocol}
    if protocol.startswith("dcmtk-"):
        require_binary("/usr/bin/getscu", "dcmtk")
        how = {"retrieve": protocol.removeprefix("dcmtk-"), "retrieve_backend": "dcmtk"}
    if protocol == "dicomweb":
        how = {"protocol": "dicomweb", "dicomweb_url": orthanc.dicomweb_url}
    elif protocol == "c-move":
        port = free_port()
        orthanc.add_modality(MOVE_AET, MOVE_AET, "127.0.0.1", port)
        how = {**how, "move_destination": MOVE_AET, "receive_port": port}
    pacs = {**how, "wait_for_window": wait}
    return dataclasses.replace(settings, pacs=dataclasses.replace(settings.pacs, **pacs))


RETRIEVED = re.compile(
    r"^retrieved (\S+)(?: by WADO-RS)?: (\d+) files \((?:(\d+) now, )?(\d+) kept"
)


def _retrievals(caplog: pytest.LogCaptureFixture) -> dict[str, tuple[int, int]]:
    """Study UID -> (instances it was retrieved with, of those kept from before a pause),
    from each study's "retrieved" line: the counts of what was written. Over WADO-RS also
    checks that the instances written now are exactly the rest."""
    out = {}
    for r in caplog.records:
        if (m := RETRIEVED.match(r.getMessage())) is not None:
            files, now, kept = int(m[2]), m[3], int(m[4])
            assert now is None or int(now) + kept == files
            out[m[1]] = (files, kept)
    return out


def _uploaded_once(standin: StandinHandle, studies: list[Any]) -> None:
    """What reached the import service: each instance once, every instance of the studies."""
    assert standin.store.uploads is not None
    sops = [str(pydicom.dcmread(BytesIO(b)).SOPInstanceUID) for b in standin.store.uploads]
    assert len(sops) == len(set(sops)) == sum(expected_files(s) for s in studies)


def _deep_studies(cohort: Cohort, n: int) -> list[Any]:
    """``n`` studies with at least five instances on the PACS (a window can end inside)."""
    return [s for s in pick_studies(cohort, 40) if expected_files(s) >= 5][:n]


class StagingClock(FakeClock):
    """dcmtk's getscu and movescu: the window's end is looked at every ``dcmtk.POLL`` s while the
    tool runs, not per instance. The PACS sends slowly through a proxy; once a second instance
    is being written (``pattern`` under ``under``: getscu's staging folder, or the C-MOVE
    storescp's), so the first is whole, the clock says 07:00. With ``hold`` the PACS's data
    waits in the proxy from then until the loader waits for the next window."""

    def __init__(
        self, start: dt.datetime, under: Path, proxy: FaultProxy, pattern: str, hold: bool
    ) -> None:
        super().__init__(start)
        self.under, self.proxy, self.pattern, self.hold = under, proxy, pattern, hold
        self.ended = False

    def now(self) -> dt.datetime:
        if not self.ended and sum(f.is_file() for f in self.under.rglob(self.pattern)) >= 2:
            if self.hold:
                self.proxy.paused.set()
            self.ended, self.t = True, max(self.t, at(0, "07:00"))
        return super().now()

    def sleep(self, seconds: float) -> None:
        self.proxy.paused.clear()
        super().sleep(seconds)


@pytest.mark.orthanc
@pytest.mark.parametrize(
    ("protocol", "associations"),
    [
        ("dicomweb", 1),
        ("c-get", 1),
        ("c-get", 2),
        ("dicomweb", 2),
        ("c-move", 1),
        ("c-move", 2),
        ("dcmtk-c-get", 1),
        ("dcmtk-c-move", 1),
    ],
)
def test_a_window_ending_mid_study_pauses_after_the_instance_in_flight_and_continues(
    protocol: str,
    associations: int,
    orthanc: Any,
    pacs_cohort: Cohort,
    standin_xnat: StandinHandle,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """WADO-RS, C-GET and C-MOVE: the clock reaches 07:00 while the first study arrives (it
    moves a minute at each look, one look per instance). The retrieval stops after the instance
    in flight (DIMSE: a C-CANCEL), the loader waits until 19:00, then asks only for what had not
    arrived; each instance is retrieved once, each study reaches XNAT once, the pause is in the
    summary (what ``--json`` prints). With two associations (C-GET: in threads, as with any
    windows) both studies are in hand when the window ends, and at least one is part way."""
    studies = _deep_studies(pacs_cohort, 2)
    pacs = {"windows": OFF_PEAK, "max_associations": associations}
    settings = load_settings_for(tmp_path, orthanc, standin_xnat, pacs=pacs)
    settings = _over(protocol, settings, orthanc)
    write_manifest(settings, pacs_cohort, studies)
    standin_xnat.store.uploads, before = [], _imports(standin_xnat)
    clock = FakeClock(at(0, "06:57"), step=MINUTE)
    proxy = FaultProxy(orthanc.host, orthanc.port)
    if protocol == "dcmtk-c-get":  # a slow PACS: getscu is in the study at a look
        proxy.delay = 0.05  # seconds per 4 KB the PACS sends
        clock = StagingClock(at(0, "06:59"), tmp_path, proxy, ".dcmtk/*", hold=True)
        pacs_at = dataclasses.replace(settings.pacs, host=proxy.host, port=proxy.port)
        settings = dataclasses.replace(settings, pacs=pacs_at)
    elif protocol == "dcmtk-c-move":  # the PACS sends slowly to our storescp, through a proxy
        proxy.close()
        receive_port = free_port()
        proxy = FaultProxy("127.0.0.1", receive_port, pacs_connects=True)
        proxy.delay = 0.05
        orthanc.add_modality(MOVE_AET, MOVE_AET, proxy.host, proxy.port)
        pacs_at = dataclasses.replace(
            settings.pacs, move_destination=MOVE_AET, receive_port=receive_port
        )
        settings = dataclasses.replace(settings, pacs=pacs_at)
        # not held: after movescu ends, the PACS finishes the instance in flight
        clock = StagingClock(at(0, "06:59"), tmp_path, proxy, "*.storescp/*", hold=False)
    try:
        with use_clock(clock), caplog.at_level(logging.INFO):
            summary = run_load(_rc(settings), "direct", build_manifest=False, sync_first=False)
    finally:
        proxy.close()
    assert (summary["loaded"], summary["failed"]) == (2, 0)
    (pause,) = summary["pauses"]
    assert pause["until"] == "2026-11-30T19:00"
    got = _retrievals(caplog)  # study -> (instances it was retrieved with, kept of those)
    assert {uid: files for uid, (files, _) in got.items()} == {
        s.study_instance_uid: expected_files(s) for s in studies
    }
    first, second = (got[s.study_instance_uid] for s in studies)
    if associations == 1:
        assert 0 < first[1] < first[0]  # part of it before the pause, kept
        assert second[1] == 0  # started after the pause
    else:  # which of the two studies in hand the window's end met part way is the threads'
        assert any(0 < kept < files for files, kept in (first, second))
    messages = [r.getMessage() for r in caplog.records]
    assert any("a PACS window ended during a study" in m for m in messages)
    assert _imports(standin_xnat) - before == 2
    _uploaded_once(standin_xnat, studies)
    assert sorted(a["study_instance_uid"] for a in attempts(settings)) == sorted(
        s.study_instance_uid for s in studies
    )


@pytest.mark.orthanc
def test_no_wait_mid_study_keeps_what_arrived_and_the_rerun_asks_only_for_the_rest(
    orthanc: Any,
    pacs_cohort: Cohort,
    standin_xnat: StandinHandle,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (study,) = _deep_studies(pacs_cohort, 1)
    uid = study.study_instance_uid
    settings = load_settings_for(
        tmp_path, orthanc, standin_xnat, pacs={"windows": OFF_PEAK, "max_associations": 1}
    )
    settings = _over("dicomweb", settings, orthanc, wait=False)
    write_manifest(settings, pacs_cohort, [study])
    standin_xnat.store.uploads, before = [], _imports(standin_xnat)
    with use_clock(FakeClock(at(0, "06:58"), step=MINUTE)), caplog.at_level(logging.INFO):
        first = run_load(_rc(settings), "direct", build_manifest=False, sync_first=False)
    assert (first["loaded"], first["not_started"]) == (0, 1)
    assert first["paused_until"] == "2026-11-30T19:00"
    assert attempts(settings) == []  # nothing recorded: the manifest still holds it
    paused = settings.work_dir / "paused"
    kept = sorted(p.name for p in (paused / uid).iterdir())
    assert 0 < len(kept) < expected_files(study)
    record = json.loads((paused / f"{uid}.json").read_text())
    assert record == {"study_instance_uid": uid, "instances_kept": len(kept),
                      "paused_until": "2026-11-30T19:00"}  # fmt: skip
    assert oct((paused / uid).stat().st_mode & 0o777) == "0o700"
    assert _imports(standin_xnat) == before  # nothing sent yet
    caplog.clear()
    with use_clock(FakeClock(at(0, "19:05"), step=MINUTE)), caplog.at_level(logging.INFO):
        second = run_load(_rc(settings), "direct", build_manifest=False, sync_first=False)
    assert (second["loaded"], second["failed"]) == (1, 0)
    assert _retrievals(caplog)[uid] == (expected_files(study), len(kept))
    assert not (paused / uid).exists()
    assert not (paused / f"{uid}.json").exists()
    assert _imports(standin_xnat) - before == 1
    _uploaded_once(standin_xnat, [study])


@pytest.mark.orthanc
def test_what_a_paused_study_kept_is_removed_once_it_leaves_the_manifest(
    orthanc: Any, pacs_cohort: Cohort, standin_xnat: StandinHandle, tmp_path: Path
) -> None:
    (study,) = _deep_studies(pacs_cohort, 1)
    settings = load_settings_for(
        tmp_path, orthanc, standin_xnat, pacs={"windows": OFF_PEAK, "max_associations": 1}
    )
    settings = _over("dicomweb", settings, orthanc, wait=False)
    write_manifest(settings, pacs_cohort, [study])
    with use_clock(FakeClock(at(0, "06:58"), step=MINUTE)):
        first = run_load(_rc(settings), "direct", build_manifest=False, sync_first=False)
    paused = settings.work_dir / "paused"
    assert first["not_started"] == 1
    assert sorted(p.name for p in paused.iterdir()) == sorted(
        [study.study_instance_uid, f"{study.study_instance_uid}.json"]
    )
    write_manifest(settings, pacs_cohort, [])  # e.g. withdrawn from the cohort meanwhile
    before = _imports(standin_xnat)
    with use_clock(FakeClock(at(0, "19:05"))):
        second = run_load(_rc(settings), "direct", build_manifest=False, sync_first=False)
    assert (second["studies"], second["loaded"]) == (0, 0)
    assert list(paused.iterdir()) == []
    assert _imports(standin_xnat) == before
