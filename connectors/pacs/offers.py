"""What the PACS offers us, probed without touching real data (for ``doctor``): whether it
answers a C-GET, whether it knows our C-MOVE destination, and which transfer syntaxes it
accepts for a storage SOP class on a C-GET association (one context per syntax, as a
retrieve proposes them: ``retrieve/holdings.py``).

The probes ask for a study UID no PACS holds, so nothing is sent; a PACS that refuses C-GET
(Orthanc without ``DicomAlwaysAllowGet``) closes the association. A destination is "known"
only when the PACS says so (a PACS answering 0xA801 for an unknown AE tells it apart).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pynetdicom import build_role
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from connectors.config import Settings
from connectors.pacs.net import make_ae, open_association
from connectors.pacs.storage import TRANSFER_SYNTAXES

logger = logging.getLogger(__name__)

PROBE_STUDY_UID = "1.2.826.0.1.3680043.10.1234.0.0"
_NAMES: dict[str, str] = {str(ts): ts.keyword for ts in TRANSFER_SYNTAXES}
_OK = {0x0000, 0xB000}


@dataclass
class Offers:
    """The PACS's answers to our probes."""

    c_get: str = "not probed"  # offered | refused | not offered, and why
    c_move: str = "not probed"  # destination known | unknown | not confirmed, and why
    syntaxes: list[str] = field(default_factory=list)  # accepted for the probe SOP class
    probe_sop_class: str = str(CTImageStorage)

    def summary(self) -> str:
        names = ", ".join(_NAMES.get(ts, ts) for ts in self.syntaxes) or "none"
        return (
            f"C-GET {self.c_get}; C-MOVE {self.c_move}; "
            f"{len(self.syntaxes)} of {len(TRANSFER_SYNTAXES)} transfer syntaxes accepted for "
            f"CT storage on a C-GET association: {names}"
        )


def _probe() -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = PROBE_STUDY_UID
    return ds


def probe_offers(settings: Settings) -> Offers:
    """Probe C-GET (and the storage syntaxes on its association) and C-MOVE."""
    out = Offers()
    ae = make_ae(settings)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for ts in TRANSFER_SYNTAXES:
        ae.add_requested_context(out.probe_sop_class, [ts])
    role = [build_role(out.probe_sop_class, scp_role=True)]
    assoc = open_association(settings, ae, ext_neg=role)
    try:
        accepted = assoc.accepted_contexts
        out.syntaxes = [
            str(cx.transfer_syntax[0])
            for cx in accepted
            if cx.abstract_syntax == out.probe_sop_class and cx.transfer_syntax
        ]
        if not any(
            cx.abstract_syntax == StudyRootQueryRetrieveInformationModelGet for cx in accepted
        ):
            out.c_get = "not offered (the Study Root C-GET model was refused)"
        else:
            statuses = [
                int(s.Status)
                for s, _ in assoc.send_c_get(_probe(), StudyRootQueryRetrieveInformationModelGet)
                if s and "Status" in s
            ]
            final = statuses[-1] if statuses else None
            if final is None:
                out.c_get = "refused (the PACS closed the association on a probe C-GET)"
            else:
                out.c_get = f"offered (a probe for an unknown study answered 0x{final:04X})"
    finally:
        if assoc.is_established:
            assoc.release()
    out.c_move = _probe_move(settings)
    return out


def _probe_move(settings: Settings) -> str:
    p = settings.pacs
    if not p.move_destination:
        return "destination not configured ([pacs] move_destination)"
    model = StudyRootQueryRetrieveInformationModelMove
    ae = make_ae(settings, [model])
    assoc = open_association(settings, ae)
    try:
        if not any(cx.abstract_syntax == model for cx in assoc.accepted_contexts):
            return "not offered (the Study Root C-MOVE model was refused)"
        statuses = [
            int(s.Status)
            for s, _ in assoc.send_c_move(_probe(), p.move_destination, model)
            if s and "Status" in s
        ]
    finally:
        if assoc.is_established:
            assoc.release()
    final = statuses[-1] if statuses else None
    if final == 0xA801:
        return f"destination {p.move_destination!r} unknown to the PACS"
    if final in _OK:
        return f"destination {p.move_destination!r} known"
    if final is None:
        return "refused (the PACS closed the association on a probe C-MOVE)"
    return (
        f"offered; destination {p.move_destination!r} not confirmed (a probe for an unknown "
        f"study answered 0x{final:04X}; Orthanc answers so whether it knows the AE or not)"
    )
