"""``MediaStreamConsumer``: the thin I/O adapter between Twilio and the speech backend.

It keeps the Channels contract (scope, channel layer, ``websocket_connect`` /
``websocket_disconnect`` handlers, group messages), but hands every ``websocket.receive``
text frame straight to its own code instead of through Channels' per-message task and
database hop: per 20 ms frame there is one JSON parse, one string build and one send.

Everything with state, and every rule of the conversation, lives in
:class:`voiceconv.session.CallSession`; the consumer only runs the actions it returns.
Database writes, signals, callbacks and tools run in tasks of their own and can never stall
or drop audio.

The consumer is composed of one mixin per room (see :mod:`voiceconv.consumers.base`):
:mod:`~voiceconv.consumers.twilio_side`, :mod:`~voiceconv.consumers.start`,
:mod:`~voiceconv.consumers.speech_side`, :mod:`~voiceconv.consumers.actions`,
:mod:`~voiceconv.consumers.control` and :mod:`~voiceconv.consumers.ending`.
"""

from __future__ import annotations

from voiceconv.consumers.actions import Actions
from voiceconv.consumers.base import (
    APOLOGY_AUDIO,
    GPT_LIVE,
    LAST_TRANSCRIPT_WAIT,
    LAYER_STOP_WAIT,
    LIVE_CLOSE_WAIT,
    REALTIME,
    ConsumerBase,
    close_quietly,
    describe,
)
from voiceconv.consumers.control import CallControl, ToolControl
from voiceconv.consumers.ending import CallEnding
from voiceconv.consumers.speech_side import SpeechSide
from voiceconv.consumers.start import CallStart
from voiceconv.consumers.twilio_side import TwilioSide

__all__ = [
    "APOLOGY_AUDIO",
    "GPT_LIVE",
    "LAST_TRANSCRIPT_WAIT",
    "LAYER_STOP_WAIT",
    "LIVE_CLOSE_WAIT",
    "REALTIME",
    "ConsumerBase",
    "MediaStreamConsumer",
    "ToolControl",
    "close_quietly",
    "describe",
]


class MediaStreamConsumer(TwilioSide, CallStart, SpeechSide, Actions, CallControl, CallEnding):
    """One Twilio media stream ⇄ one speech session (Realtime or GPT-Live).

    Subclass and override the hooks (``get_session_config``, ``get_instructions``,
    ``get_greeting``, ``get_state``, ``get_openai_client``, ``get_backend``, ``get_tools``,
    ``on_user_message``, ``on_assistant_message``) for full control; route the subclass with
    ``YourConsumer.as_asgi()``. Collaborators can also be injected as ``as_asgi`` keywords
    (``backend_factory``, ``recorder_class``).
    """
