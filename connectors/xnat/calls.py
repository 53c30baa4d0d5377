"""What the parts of ``XnatClient`` mixed into it (``reads.py``, ``dqr.py``) call on it: its
``_request`` and ``_get_json`` (``client.py``), which translate errors. Declared once here."""

from __future__ import annotations

from typing import Any


class ClientCalls:
    """The requests ``XnatClient`` makes for its parts."""

    settings: Any
    project: str

    def _request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        per_study: bool,
        ok: Any = (200,),
        timeout: float | None = None,
        _again: bool = False,
        **kwargs: Any,
    ) -> Any:
        raise NotImplementedError  # XnatClient's

    def _get_json(self, path: str, what: str, params: dict[str, Any] | None = None) -> Any:
        raise NotImplementedError  # XnatClient's
