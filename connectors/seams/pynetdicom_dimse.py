"""Two guards on pynetdicom's DIMSE message queue (``DIMSEServiceProvider.get_msg`` and
``msg_queue``, a ``queue.Queue`` whose ``mutex`` and ``queue`` deque are read here), and on how
the association says its peer has gone (``Association.is_aborted``/``is_released``,
``acse.is_aborted()``, ``dul.is_alive()`` and ``dul.state_machine.current_state``).

1. Responses stay for the waiting ``send_*()``. pynetdicom pauses its reactor while
   ``send_c_find()`` and friends wait for responses, but the pause is racy: a fast peer's
   response can arrive in the instant between the reactor's checkpoint and its non-blocking
   ``get_msg()``, and the reactor then discards it as "Received unexpected C-FIND service
   message" (pydicom/pynetdicom#875). A lost Pending response is a study silently missed; a lost
   final response a DIMSE timeout. We saw both within seconds with two associations against
   Orthanc. With this guard the reactor only ever takes *requests* (e.g. C-STORE during C-GET).

2. A peer that has gone ends the wait at once, not after ``dimse_timeout``. When the connection
   closes or an A-ABORT arrives, pynetdicom puts one ``(None, None)`` on the queue: it wakes the
   one ``send_*()`` waiting, but the next ``send_*()`` on the same association (issued before
   the reactor marked it not established, e.g. the next C-FIND of a study's holdings) finds the
   queue empty and waited the whole ``dimse_timeout`` (300 s as configured: we measured it with
   a proxy that drops the connection). The blocking ``get_msg()`` here waits in short slices and
   answers ``(None, None)`` as soon as the association is aborted or released, its connection
   closed (state Sta1) or its DUL thread ended, after handing over every message that arrived
   before.
"""

from __future__ import annotations

import queue
import time
from typing import Any

#: how often a waiting send_*() looks whether the peer has gone (seconds)
SLICE = 0.05


def peer_gone(assoc: Any) -> bool:
    """Whether no DIMSE response can come any more on ``assoc``: aborted (by either side) or
    released, the connection closed (the DUL back in Sta1, idle) or its thread ended."""
    dul = assoc.dul
    return bool(
        assoc.is_aborted
        or assoc.is_released
        or assoc.acse.is_aborted()
        or dul.state_machine.current_state == "Sta1"
        or not dul.is_alive()
    )


def guard_responses(assoc: Any) -> None:
    """Keep the association's reactor thread from taking DIMSE *responses* off the queue, and
    end a blocking wait for one as soon as the peer has gone (see the module)."""
    dimse = assoc.dimse
    messages: queue.Queue[Any] = dimse.msg_queue

    def wait() -> Any:
        timeout = dimse.dimse_timeout
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        while True:
            left = SLICE if deadline is None else min(SLICE, deadline - time.monotonic())
            try:
                return messages.get(block=True, timeout=max(left, 0.0))
            except queue.Empty:
                pass
            if peer_gone(assoc):
                try:  # what arrived before the peer went is still an answer
                    return messages.get(block=False)
                except queue.Empty:
                    return None, None
            if deadline is not None and time.monotonic() >= deadline:
                return None, None

    def get_msg(block: bool = False) -> Any:
        if block:
            return wait()
        with messages.mutex:
            if not messages.queue:
                return None, None
            _context_id, msg = messages.queue[0]
            if msg is None or not msg.is_valid_request:
                return None, None  # a response: it belongs to the send_*() waiting for it
            return messages.queue.popleft()

    dimse.get_msg = get_msg
