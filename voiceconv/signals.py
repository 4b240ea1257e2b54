"""voiceconv's public signals.

All are sent from the call's dispatcher task with ``asend_robust`` after the record is saved, so a
slow or failing receiver can neither stall audio nor end a call (failures are logged).
``sender`` is the consumer class handling the call (``MediaStreamConsumer`` or a subclass).
Receivers may be sync or async functions.
"""

from __future__ import annotations

from django.dispatch import Signal

#: The stream started and the ``Call`` row is in progress.
#: Arguments: ``call`` (:class:`voiceconv.models.Call`),
#: ``info`` (:class:`voiceconv.events.CallInfo`).
call_started = Signal()

#: A transcript entry was saved.
#: Arguments: ``call`` (``Call``), ``entry`` (:class:`voiceconv.models.TranscriptEntry`),
#: ``turn`` (:class:`voiceconv.events.TranscriptTurn`).
transcript_entry = Signal()

#: A tool ran and its invocation was saved.
#: Arguments: ``call`` (``Call``), ``invocation`` (:class:`voiceconv.models.ToolInvocation`),
#: ``result`` (:class:`voiceconv.tools.runtime.ToolResult`).
tool_invoked = Signal()

#: The call ended and the ``Call`` row is final (Twilio's status callback may still refine
#: ``status`` and ``duration_seconds`` later).
#: Arguments: ``call`` (``Call``), ``reason`` (``str``, a ``Call.EndReason`` value or another).
call_ended = Signal()

#: The incoming-call webhook recorded a call (sent by the view, before it answers; sender:
#: the ``Call`` class). Arguments: ``call`` (``Call``), ``agent`` (``Agent`` or ``None``).
call_received = Signal()

#: Twilio's status callback was recorded (sent by the view; sender: the ``Call`` class).
#: Arguments: ``call`` (``Call``, updated), ``status`` (``str``, "" if absent or unknown),
#: ``duration`` (``float`` seconds or ``None``), ``created`` (``bool``: a call never seen).
call_status_changed = Signal()

__all__ = [
    "call_ended", "call_received", "call_started", "call_status_changed", "tool_invoked",
    "transcript_entry",
]
