"""pynetdicom's logging switches (``pynetdicom._config``, its documented configuration module).

- It logs C-FIND request and response identifiers (patient names, birth dates) unless
  ``LOG_REQUEST_IDENTIFIERS`` / ``LOG_RESPONSE_IDENTIFIERS`` are False; its own qrscp app
  switches them off the same way.
- With ``LOG_HANDLER_LEVEL = "standard"`` (its default) every association it creates binds
  handlers that decode and format each DIMSE message and PDU for its INFO and DEBUG log, whether
  or not anything will show it: a tenth of a retrieve's Python time (benchmarks/load), on every
  instance and every C-FIND answer. ``"none"`` binds none.
"""

from __future__ import annotations

import logging

SWITCHES = ("LOG_REQUEST_IDENTIFIERS", "LOG_RESPONSE_IDENTIFIERS")


def hide_identifiers() -> None:
    """Never log DICOM identifiers (they carry patient names)."""
    from pynetdicom import _config

    for name in SWITCHES:
        setattr(_config, name, False)


def log_dimse_only_if_shown() -> None:
    """Bind pynetdicom's standard log handlers to the associations created from now on only
    when its log is shown at INFO (``--verbose``); identifiers stay hidden either way. Called
    as each AE is made, so spawned workers (whose logging is Python's default) decide alike."""
    from pynetdicom import _config

    hide_identifiers()
    shown = logging.getLogger("pynetdicom").isEnabledFor(logging.INFO)
    _config.LOG_HANDLER_LEVEL = "standard" if shown else "none"
