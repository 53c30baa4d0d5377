"""pynetdicom logs C-FIND request and response identifiers (patient names, birth dates) unless
``pynetdicom._config.LOG_REQUEST_IDENTIFIERS`` / ``LOG_RESPONSE_IDENTIFIERS`` are False; its
own qrscp app switches them off the same way."""

from __future__ import annotations

SWITCHES = ("LOG_REQUEST_IDENTIFIERS", "LOG_RESPONSE_IDENTIFIERS")


def hide_identifiers() -> None:
    """Never log DICOM identifiers (they carry patient names)."""
    from pynetdicom import _config

    for name in SWITCHES:
        setattr(_config, name, False)
