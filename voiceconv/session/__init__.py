"""The sans-I/O call core, one concern a module (as h11 splits its connection).

- :mod:`~voiceconv.session.messages`: pure Twilio message validation and parsing, and the JSON
  the core builds;
- :mod:`~voiceconv.session.actions`: what the I/O layer is asked to do;
- :mod:`~voiceconv.session.playback`: marks and heard-audio maths;
- :mod:`~voiceconv.session.limits`: call-length and idle limits;
- :mod:`~voiceconv.session.timing`: time to first audio per turn, on the I/O layer's clock;
- :mod:`~voiceconv.session.realtime_side` and :mod:`~voiceconv.session.realtime_caller`: the
  Realtime events (the assistant's side, the caller's side);
- :mod:`~voiceconv.session.core`: :class:`CallSession`, the glue.

stdlib only (plus :mod:`voiceconv.exceptions`, for whose fault a bad message is): no clock,
no I/O, no settings, no database.
"""

from __future__ import annotations

from voiceconv.session.actions import (
    Action,
    ApologyHeard,
    ArmHangupDeadline,
    CloseStream,
    EndCall,
    FlushEarlyAudio,
    HangUp,
    Log,
    RecordBargeIn,
    RecordFirstAudio,
    RecordMilestone,
    RecordSessionSeconds,
    RecordTurn,
    RecordUsage,
    RunTools,
    SendToRealtime,
    SendToTwilio,
    StampTime,
    StartStream,
    ToolCall,
    ToolOutcome,
    Transfer,
)
from voiceconv.session.core import REALTIME_HANDLERS, TWILIO_HANDLERS, CallSession
from voiceconv.session.limits import NEVER, Limits
from voiceconv.session.messages import (
    BadEvent,
    BadInput,
    StreamStart,
    b64_decoded_len,
    dumps,
    is_base64,
    user_text_item,
)
from voiceconv.session.playback import AssistantItem, estimate_heard
from voiceconv.session.state import CallState

__all__ = [
    "NEVER",
    "REALTIME_HANDLERS",
    "TWILIO_HANDLERS",
    "Action",
    "ApologyHeard",
    "ArmHangupDeadline",
    "AssistantItem",
    "BadEvent",
    "BadInput",
    "CallSession",
    "CallState",
    "CloseStream",
    "EndCall",
    "FlushEarlyAudio",
    "HangUp",
    "Limits",
    "Log",
    "RecordBargeIn",
    "RecordFirstAudio",
    "RecordMilestone",
    "RecordSessionSeconds",
    "RecordTurn",
    "RecordUsage",
    "RunTools",
    "SendToRealtime",
    "SendToTwilio",
    "StampTime",
    "StartStream",
    "StreamStart",
    "ToolCall",
    "ToolOutcome",
    "Transfer",
    "b64_decoded_len",
    "dumps",
    "estimate_heard",
    "is_base64",
    "user_text_item",
]
