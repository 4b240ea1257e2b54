"""The one accessor for voiceconv's settings.

Projects configure the app with a single ``VOICECONV`` dict in their Django settings.
Every key has a documented default here; read them as attributes of ``voiceconv_settings``::

    from voiceconv.conf import voiceconv_settings
    voiceconv_settings.MODEL

Values are read lazily and cached; the cache is dropped when Django's ``setting_changed``
signal fires for ``VOICECONV`` (as in tests using ``override_settings``).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from voiceconv.exceptions import ConfigurationError

DEFAULTS: dict[str, Any] = {
    # --- the speech model and its session -------------------------------------------------
    # Realtime model named in the connection URL. Current, non-deprecated family.
    "MODEL": "gpt-realtime-2.1",
    # Output voice (alloy ash ballad coral echo sage shimmer verse marin cedar).
    "VOICE": "marin",
    # System instructions for the agent.
    "INSTRUCTIONS": (
        "You are a friendly, concise phone assistant. Speak naturally, keep answers short, "
        "and ask one question at a time."
    ),
    # What the agent is asked to say when the call connects ("" = wait for the caller).
    "GREETING": "Greet the caller briefly and ask how you can help.",
    # audio.input.turn_detection (GA shape); None disables server VAD.
    "TURN_DETECTION": {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 500,
        "create_response": True,
        "interrupt_response": True,
    },
    # audio.input.transcription model; None turns caller transcription off.
    "TRANSCRIPTION_MODEL": "gpt-realtime-whisper",
    # Optional ISO-639-1 language hint for caller transcription ("" = auto).
    "TRANSCRIPTION_LANGUAGE": "",
    # audio.input.noise_reduction type: "near_field", "far_field" or None (off).
    "NOISE_REDUCTION": "near_field",
    # Output speech speed, 0.25-1.5.
    "SPEED": 1.0,
    # reasoning.effort for reasoning models ("minimal", "low", "medium", "high"); None = omit.
    "REASONING_EFFORT": None,
    # max_output_tokens per response: 1-4096 or "inf".
    "MAX_OUTPUT_TOKENS": "inf",
    # Extra keys merged into the session object last (for options voiceconv does not model).
    "SESSION_EXTRA": {},
    # --- the Twilio side ------------------------------------------------------------------
    # Public origin Twilio reaches us on, e.g. "https://voice.example.com". Empty = derive from
    # the request (honouring X-Forwarded-Proto / X-Forwarded-Host).
    "PUBLIC_URL": "",
    # Path of the Media Streams websocket route (as mounted in the project's URLRouter).
    "STREAM_PATH": "/twilio/stream/",
    # Check X-Twilio-Signature on webhooks and the stream handshake. Turn off only for local
    # experiments; a system check warns when it is off outside DEBUG.
    "VALIDATE_TWILIO_SIGNATURE": True,
    # Require the per-call stream token minted by the webhook in the stream's start message.
    "REQUIRE_STREAM_TOKEN": True,
    # Seconds a stream token stays valid after the webhook answered.
    "STREAM_TOKEN_MAX_AGE": 120,
    # Forward caller key presses to the model as conversation items.
    "FORWARD_DTMF": True,
    # Text of the item sent to the model for a key press; {digit} is replaced.
    "DTMF_TEMPLATE": "[The caller pressed the key {digit} on their phone keypad.]",
    # --- limits ---------------------------------------------------------------------------
    # Caller audio buffered while the OpenAI session opens (ms); older audio is dropped.
    "EARLY_AUDIO_BUFFER_MS": 5000,
    # Seconds to wait for the Realtime connection and session.updated before giving up.
    "CONNECT_TIMEOUT": 10.0,
    # New Realtime sessions tried in a row when the connection drops mid-call (0 = end the call).
    "REALTIME_RECONNECT_ATTEMPTS": 3,
    # Seconds to wait for the goodbye to be heard before hanging up anyway.
    "HANGUP_GRACE_SECONDS": 10.0,
    # Longest call in seconds (0 = no limit): the agent warns the caller CALL_END_WARNING_SECONDS
    # before, then says goodbye and hangs up.
    "MAX_CALL_SECONDS": 1800,
    "CALL_END_WARNING_SECONDS": 60,
    # A silent caller is asked whether they are still there after IDLE_REPROMPT_SECONDS, and
    # the call ends IDLE_HANGUP_SECONDS after that if they stay silent (0 = off).
    "IDLE_REPROMPT_SECONDS": 10,
    "IDLE_HANGUP_SECONDS": 20,
    # Seconds a slow tool may run before the agent says its holding line.
    "TOOL_HOLDING_DELAY": 1.5,
    # Most calls one server process holds; the webhook answers busy beyond it (0 = no limit).
    "MAX_CONCURRENT_CALLS": 0,
    # Spoken (TwiML <Say>) to callers turned away by MAX_CONCURRENT_CALLS.
    "BUSY_MESSAGE": "All our lines are busy right now. Please call again in a few minutes.",
    # Raw μ-law 8 kHz file played when the call cannot go on (OpenAI unreachable or failing);
    # None = the bundled English apology (voiceconv/data/apology.ulaw).
    "APOLOGY_AUDIO": None,
    # Default seconds a tool may run before its call is answered with a timeout error.
    "TOOL_TIMEOUT": 10.0,
    # USD per 1M tokens by model, over the built-in list prices (see voiceconv.models.calls):
    # {"gpt-realtime-2.1": {"input_text": "4.00", "input_audio": "32.00", ...}}.
    "PRICES": {},
    # Most call records (transcript turns, usage, tool calls, call start/end) the process holds
    # while the database is unavailable; beyond it new records are dropped, each with an ERROR
    # line (about 1-2 KB each: the default bounds the backlog to a few hundred MB).
    "RECORDS_MAX_PENDING": 100_000,
    # Origin that Twilio REST requests go to instead of Twilio's (tests, on-premises proxies).
    "TWILIO_API_BASE": "",
    # --- extension points -----------------------------------------------------------------
    # Callables or dotted paths, sync or async, run off the audio path for every finished turn:
    # fn(text), fn(text, info) or fn(text, info, consumer); info is a voiceconv.events.CallInfo.
    "ON_USER_MESSAGE": None,
    "ON_ASSISTANT_MESSAGE": None,
    # Factory returning an openai.AsyncOpenAI client (callable or dotted path).
    # None = AsyncOpenAI() from the environment.
    "OPENAI_CLIENT_FACTORY": None,
}

# Keys whose value may be a dotted path to import.
IMPORT_STRINGS = {"ON_USER_MESSAGE", "ON_ASSISTANT_MESSAGE", "OPENAI_CLIENT_FACTORY"}


class VoiceconvSettings:
    """Attribute access to ``settings.VOICECONV`` over :data:`DEFAULTS`."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    @property
    def user_settings(self) -> dict[str, Any]:
        value = getattr(settings, "VOICECONV", None) or {}
        if not isinstance(value, dict):
            raise ConfigurationError("VOICECONV must be a dict.")
        return value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in DEFAULTS:
            raise AttributeError(f"Unknown voiceconv setting {name!r}")
        if name in self._cache:
            return self._cache[name]
        value = self.user_settings.get(name, DEFAULTS[name])
        if name in IMPORT_STRINGS and isinstance(value, str) and value:
            try:
                value = import_string(value)
            except ImportError as exc:
                raise ConfigurationError(
                    f"VOICECONV[{name!r}] = {value!r} could not be imported: {exc}"
                ) from exc
        self._cache[name] = value
        return value

    def reload(self) -> None:
        self._cache.clear()


voiceconv_settings = VoiceconvSettings()


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting == "VOICECONV":
        voiceconv_settings.reload()


setting_changed.connect(_reload)
