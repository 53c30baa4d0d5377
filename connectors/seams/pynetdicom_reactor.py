"""pynetdicom's DUL reactor sleeps ``DULServiceProvider._run_loop_delay`` (1 ms) whenever it
finds nothing to do; a retrieve meets that sleep on every C-STORE round trip
(``connectors/pacs/retrieve/pace.py`` shortens it during transfers)."""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

ATTRIBUTE = "_run_loop_delay"
_warned: list[bool] = []


def has_reactor_delay(assoc: Any) -> bool:
    return hasattr(getattr(assoc, "dul", None), ATTRIBUTE)


def set_reactor_delay(assoc: Any, seconds: float) -> None:
    """How long the association's reactor sleeps when idle; a no-op (warned once) if this
    pynetdicom has no such attribute: the retrieve still works, only slower."""
    dul = getattr(assoc, "dul", None)
    if dul is not None and hasattr(dul, ATTRIBUTE):
        setattr(dul, ATTRIBUTE, seconds)
    elif dul is not None and not _warned:
        _warned.append(True)
        logger.warning("pynetdicom's DUL has no %s: retrieves run at its own pace", ATTRIBUTE)
