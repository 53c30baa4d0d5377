"""The cycle's "today". ``PACS2XNAT_TODAY=YYYY-MM-DD`` pins it (the demo's "three months
later" cycle, tests); otherwise it is the local date. dbt sees the same day as ``var('today')``.
"""

from __future__ import annotations

import datetime as dt
import os

from connectors.errors import ConfigError

TODAY_ENV = "PACS2XNAT_TODAY"


def today() -> dt.date:
    pinned = os.environ.get(TODAY_ENV, "").strip()
    if not pinned:
        return dt.date.today()
    try:
        return dt.date.fromisoformat(pinned)
    except ValueError:
        raise ConfigError(f"${TODAY_ENV} = {pinned!r}: not a date (YYYY-MM-DD)") from None


def is_pinned() -> bool:
    return bool(os.environ.get(TODAY_ENV, "").strip())


def utcnow() -> dt.datetime:
    """Naive UTC timestamp, the form every ``*_at`` column holds."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)
