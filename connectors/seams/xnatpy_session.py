"""Let go of an xnatpy session whose XNAT has gone, without asking XNAT.

``XNATSession.disconnect`` first sends ``DELETE /data/JSESSION`` and only then, in
``BaseXNATSession.disconnect``, stops the keep-alive thread and closes the HTTP session. When
XNAT has stopped answering, the DELETE raises, nothing is let go, and the session's ``__del__``
tries again at garbage collection: an "Exception ignored in ... __del__" traceback on the
engineer's terminal at some random later moment. (Under CPython 3.11.7 that traceback,
formatted while another traceback's source was being parsed, crashed pytest with "AST constructor
recursion depth mismatch".) Calling the base class's ``disconnect`` does the local half only; the
server ends the unused JSESSION at its own timeout.
"""

from __future__ import annotations

from typing import Any


def let_go(session: Any) -> None:
    """Stop ``session``'s keep-alive and close its HTTP session, sending nothing to XNAT."""
    from xnat.session import BaseXNATSession

    BaseXNATSession.disconnect(session)
