"""A guard on pynetdicom's DIMSE message queue (``DIMSEServiceProvider.get_msg`` and
``msg_queue``, a ``queue.Queue`` whose ``mutex`` and ``queue`` deque are read here).

pynetdicom pauses its reactor while ``send_c_find()`` and friends wait for responses, but the
pause is racy: a fast peer's response can arrive in the instant between the reactor's
checkpoint and its non-blocking ``get_msg()``, and the reactor then discards it as "Received
unexpected C-FIND service message" (pydicom/pynetdicom#875). A lost Pending response is a study
silently missed; a lost final response a DIMSE timeout. We saw both within seconds with two
associations against Orthanc. With this guard the reactor only ever takes *requests* (e.g.
C-STORE during C-GET); responses stay queued for the ``send_*()`` call waiting for them.
"""

from __future__ import annotations

from typing import Any


def guard_responses(assoc: Any) -> None:
    """Keep the association's reactor thread from taking DIMSE *responses* off the queue."""
    dimse = assoc.dimse
    messages = dimse.msg_queue
    blocking_get = dimse.get_msg

    def get_msg(block: bool = False) -> Any:
        if block:
            return blocking_get(block=True)
        with messages.mutex:
            if not messages.queue:
                return None, None
            _context_id, msg = messages.queue[0]
            if msg is None or not msg.is_valid_request:
                return None, None  # a response: it belongs to the send_*() waiting for it
            return messages.queue.popleft()

    dimse.get_msg = get_msg
