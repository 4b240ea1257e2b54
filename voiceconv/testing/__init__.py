"""Public test kit: a Realtime stand-in, a Twilio Media Streams client, a Twilio REST stand-in,
an ASGI server process (or one inside this process) and μ-law helpers.

Everything public is importable from here; the pytest fixtures live in
``voiceconv.testing.fixtures`` (``pytest_plugins = ["voiceconv.testing.fixtures"]``).
"""

from __future__ import annotations

from voiceconv.testing.audio import (
    BYTES_PER_MS,
    FRAME_BYTES,
    SAMPLE_RATE,
    ULAW_SILENCE,
    espeak_ulaw,
    frames,
    pcm16_rms,
    rms,
    silence,
    speech_like,
    tone,
    ulaw_decode,
    ulaw_encode,
)
from voiceconv.testing.factory import TwilioStreamClientFactory
from voiceconv.testing.inprocess import InProcessServer, InProcessServerError
from voiceconv.testing.live_server import (
    GPTLiveStandIn,
    LiveStandInSession,
    ScriptedDelegation,
    ScriptedFragment,
    ScriptedLiveAnswer,
    validate_live_client_event,
    validate_live_server_event,
)
from voiceconv.testing.realtime_server import (
    DEFAULT_INSTRUCTIONS,
    SESSION_EXPIRED_MESSAGE,
    RealtimeStandIn,
    ScriptedFunctionCall,
    ScriptedResponse,
    SipCall,
    StandInSession,
    default_session_config,
    send_call_incoming,
    sign_webhook,
    validate_client_event,
    validate_server_event,
)
from voiceconv.testing.server import ServerProcess, free_port
from voiceconv.testing.twilio_api import FakeTwilioAPI, PlacedCall, StartedRecording, TwilioRequest
from voiceconv.testing.twilio_client import (
    ClearRecord,
    MarkRecord,
    MediaRecord,
    TwilioStreamClient,
    TwilioWebhookError,
    Violation,
    new_sid,
)

__all__ = [
    "BYTES_PER_MS",
    "DEFAULT_INSTRUCTIONS",
    "FRAME_BYTES",
    "SAMPLE_RATE",
    "SESSION_EXPIRED_MESSAGE",
    "ULAW_SILENCE",
    "ClearRecord",
    "FakeTwilioAPI",
    "GPTLiveStandIn",
    "InProcessServer",
    "InProcessServerError",
    "LiveStandInSession",
    "MarkRecord",
    "MediaRecord",
    "PlacedCall",
    "RealtimeStandIn",
    "ScriptedDelegation",
    "ScriptedFragment",
    "ScriptedFunctionCall",
    "ScriptedLiveAnswer",
    "ScriptedResponse",
    "ServerProcess",
    "SipCall",
    "StandInSession",
    "StartedRecording",
    "TwilioRequest",
    "TwilioStreamClient",
    "TwilioStreamClientFactory",
    "TwilioWebhookError",
    "Violation",
    "default_session_config",
    "espeak_ulaw",
    "frames",
    "free_port",
    "new_sid",
    "pcm16_rms",
    "rms",
    "send_call_incoming",
    "sign_webhook",
    "silence",
    "speech_like",
    "tone",
    "ulaw_decode",
    "ulaw_encode",
    "validate_client_event",
    "validate_live_client_event",
    "validate_live_server_event",
    "validate_server_event",
]
