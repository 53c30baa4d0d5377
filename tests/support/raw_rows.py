"""Rows of the raw tables for tests that write the warehouse directly."""

from __future__ import annotations

from connectors.clock import utcnow


def run_row(run_id: str) -> dict[str, object]:
    """A ``raw.runs`` row of a running ``test`` command."""
    now = utcnow()
    return {
        "run_id": run_id,
        "command": "test",
        "arguments": "[]",
        "started_at": now,
        "outcome": "running",
        "loaded_at": now,
    }
