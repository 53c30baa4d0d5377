"""A PACS that closes the association while we wait for its answer (Orthanc does after its
``DicomScpTimeout``; a proxy holds Orthanc's answer, then drops the connection): each of our
C-FIND, C-GET and C-MOVE waits gives up at once with a transient error, not after the
``dimse_timeout`` (an hour here; the test's own timeout is the bound)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from connectors import PROJECT_ROOT
from connectors.errors import PacsUnreachable, StudyFailed
from connectors.load.retry_policy import RetryPolicy
from connectors.pacs.net import ABORTED_REQUEST_PAUSES, make_ae, open_association
from connectors.pacs.retrieve.dimse import consume, find_study, identifier
from connectors.pacs.retrieve.engine import AssociationRetriever
from connectors.pacs.retrieve.holdings import learn
from connectors.seams.pynetdicom_dimse import peer_gone
from connectors.testbed.cohort import Cohort
from tests.support.fault_proxy import FaultProxy
from tests.support.pacs_fixtures import pacs_settings

pytestmark = [pytest.mark.orthanc, pytest.mark.timeout(120)]

HOUR = 3600.0
POLICY = RetryPolicy.from_project(PROJECT_ROOT)


@pytest.fixture
def proxy(orthanc: Any) -> Iterator[FaultProxy]:
    p = FaultProxy(orthanc.host, orthanc.port)
    p.aet = orthanc.aet
    yield p
    p.paused.clear()
    p.close()


def _associate(proxy: FaultProxy, model: str) -> Association:
    settings = pacs_settings(proxy, dimse_timeout=HOUR, network_timeout=HOUR)
    return open_association(settings, make_ae(settings, [model, CTImageStorage]))


def test_an_association_request_the_pacs_drops_is_asked_again_then_given_up(
    proxy: FaultProxy,
) -> None:
    """A PACS that drops the connection of an association request (a busy Orthanc does) is
    asked again after a pause, up to twice; one that keeps dropping it is PacsUnreachable. A
    PACS that is not there at all is not asked again (test_retrieve: no PACS is unreachable)."""
    proxy.abort_next = 1
    assoc = _associate(proxy, StudyRootQueryRetrieveInformationModelFind)
    assert assoc.is_established
    assoc.release()
    assert (proxy.aborted, proxy.connections) == (1, 1)
    proxy.abort_next = 5
    with pytest.raises(PacsUnreachable, match="aborted the association request"):
        _associate(proxy, StudyRootQueryRetrieveInformationModelFind)
    assert proxy.aborted == 1 + 1 + len(ABORTED_REQUEST_PAUSES)


def _hold_then_drop(proxy: FaultProxy, *, then_answer: bool = False) -> threading.Thread:
    """From now on the PACS's answers wait in the proxy; once one waits, every connection is
    reset (the held answer is never sent), and new ones answered again if ``then_answer``."""
    proxy.paused.set()

    def drop() -> None:
        while proxy.held == 0:
            time.sleep(0.01)
        proxy.drop()
        if then_answer:
            proxy.paused.clear()

    t = threading.Thread(target=drop, daemon=True)
    t.start()
    return t


def _study(pacs_cohort: Cohort) -> str:
    return pacs_cohort.studies[0].study_instance_uid


def test_a_c_find_for_the_holdings_ends_transient_when_the_pacs_closes(
    proxy: FaultProxy, pacs_cohort: Cohort
) -> None:
    """The study-level C-FIND is the one held. pynetdicom wakes only the first waiter on a
    closed connection: the series-level C-FIND that followed on the same association (sent
    before pynetdicom's reactor marked it closed) waited out the whole dimse_timeout, and the
    study went on with guessed holdings. Now the first lost answer ends ``learn``, and any
    later wait on that association ends at once too."""
    assoc = _associate(proxy, StudyRootQueryRetrieveInformationModelFind)
    dropper = _hold_then_drop(proxy)
    with pytest.raises(StudyFailed) as e:
        learn(assoc, _study(pacs_cohort))
    dropper.join()
    assert e.value.reason_category == "retrieve_failed"
    assert POLICY.is_transient(e.value.reason_category)
    assert "closed the association" in str(e.value)
    assert peer_gone(assoc)  # (pynetdicom's reactor marks it not established a moment later)
    assert assoc.dimse.get_msg(block=True) == (None, None)  # the next request's wait: at once


def test_the_existence_check_ends_transient_too(proxy: FaultProxy, pacs_cohort: Cohort) -> None:
    """The C-FIND that tells "not on the PACS" from a lost answer: never "not found"."""
    assoc = _associate(proxy, StudyRootQueryRetrieveInformationModelFind)
    _hold_then_drop(proxy).join(0)
    with pytest.raises(StudyFailed) as e:
        find_study(assoc, _study(pacs_cohort))
    assert e.value.reason_category == "retrieve_failed"


@pytest.mark.parametrize(
    ("model", "send"),
    [
        (StudyRootQueryRetrieveInformationModelGet, lambda a, ds, m: a.send_c_get(ds, m)),
        (
            StudyRootQueryRetrieveInformationModelMove,
            lambda a, ds, m: a.send_c_move(ds, "P2X_NOWHERE", m),
        ),
    ],
    ids=["c-get", "c-move"],
)
def test_a_c_get_or_c_move_ends_as_a_lost_association_when_the_pacs_closes(
    proxy: FaultProxy, pacs_cohort: Cohort, model: str, send: Callable[..., Any]
) -> None:
    assoc = _associate(proxy, model)
    _hold_then_drop(proxy)
    outcome = consume(send(assoc, identifier(_study(pacs_cohort)), model))
    assert outcome.final_status is None  # judged "the association was lost": retrieve_failed
    assert peer_gone(assoc)


def test_an_idle_association_lost_while_asking_is_replaced_and_the_study_retrieved(
    proxy: FaultProxy, pacs_files: list[Path], tmp_path: Path
) -> None:
    """The C-GET association kept open between studies: the PACS closes it just as the next
    study's holdings are asked on it. A new association asks again and retrieves the study."""
    by_study: dict[str, list[Path]] = {}
    for f in pacs_files:
        by_study.setdefault(f.parent.name, []).append(f)
    first, second = sorted(by_study)[:2]
    settings = pacs_settings(proxy, max_associations=1, dimse_timeout=HOUR, network_timeout=HOUR)
    with AssociationRetriever(settings) as r:
        r.retrieve(first, tmp_path / "first")
        opened = proxy.connections
        dropper = _hold_then_drop(proxy, then_answer=True)
        got = r.retrieve(second, tmp_path / "second", len(by_study[second]))
    dropper.join()
    assert got.files == len(by_study[second])
    assert proxy.connections > opened  # the lost one replaced
