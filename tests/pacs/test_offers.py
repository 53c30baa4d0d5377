"""``doctor``'s probe of what the PACS offers, against real Orthancs: C-GET offered or refused,
the C-MOVE destination, and the transfer syntaxes accepted one context each."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from connectors.pacs.offers import probe_offers
from connectors.pacs.storage import TRANSFER_SYNTAXES
from tests.support.pacs_fixtures import pacs_settings


@pytest.mark.orthanc
def test_orthanc_offers_c_get_and_every_syntax(orthanc: Any) -> None:
    offers = probe_offers(pacs_settings(orthanc, move_destination="SOMEONE"))
    assert offers.c_get.startswith("offered")
    assert offers.c_move.startswith("offered")
    assert sorted(offers.syntaxes) == sorted(str(ts) for ts in TRANSFER_SYNTAXES)
    assert "12 of 12 transfer syntaxes" in offers.summary()


@pytest.mark.orthanc
def test_a_pacs_refusing_c_get_is_said_so(orthanc_factory: Callable[..., Any]) -> None:
    server = orthanc_factory(config={"DicomAlwaysAllowGet": False})
    offers = probe_offers(pacs_settings(server))
    assert offers.c_get.startswith("refused")
    assert offers.c_move.startswith("destination not configured")
