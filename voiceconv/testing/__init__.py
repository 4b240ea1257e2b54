"""Public test kit: a Realtime stand-in, a Twilio Media Streams client and μ-law helpers."""

from __future__ import annotations

from voiceconv.testing.audio import (
    ULAW_SILENCE,
    espeak_ulaw,
    frames,
    rms,
    silence,
    speech_like,
    tone,
    ulaw_decode,
    ulaw_encode,
)
from voiceconv.testing.realtime_server import (
    RealtimeStandIn,
    ScriptedFunctionCall,
    ScriptedResponse,
    StandInSession,
    validate_client_event,
    validate_server_event,
)
from voiceconv.testing.server import ServerProcess, free_port
from voiceconv.testing.twilio_client import (
    ClearRecord,
    MarkRecord,
    MediaRecord,
    TwilioStreamClient,
    TwilioWebhookError,
    Violation,
)

__all__ = [
    "ULAW_SILENCE",
    "ClearRecord",
    "MarkRecord",
    "MediaRecord",
    "RealtimeStandIn",
    "ScriptedFunctionCall",
    "ScriptedResponse",
    "ServerProcess",
    "StandInSession",
    "TwilioStreamClient",
    "TwilioWebhookError",
    "Violation",
    "espeak_ulaw",
    "frames",
    "free_port",
    "rms",
    "silence",
    "speech_like",
    "tone",
    "ulaw_decode",
    "ulaw_encode",
    "validate_client_event",
    "validate_server_event",
]
