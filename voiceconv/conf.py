"""The one accessor for voiceconv's settings.

Projects configure the app with a single ``VOICECONV`` dict in their Django settings.
Every key has a documented default here; read them as attributes of ``voiceconv_settings``::

    from voiceconv.conf import voiceconv_settings
    voiceconv_settings.MODEL

Reads are typed: :class:`VoiceconvSettings` declares the type of every key, and a value is
checked (and, where that is lossless, converted: ``10`` for a float, ``"30"`` for an int) when
it is first read (:func:`voiceconv.coercion.coerce`), so the point of use never converts. A
value of the wrong type is a :class:`~voiceconv.exceptions.ConfigurationError` naming the key.
The call limits and the timeouts also come as small typed objects,
:attr:`VoiceconvSettings.limits` and :attr:`VoiceconvSettings.timeouts`, built once.

Values are read lazily and cached; the cache is dropped when Django's ``setting_changed``
signal fires for ``VOICECONV`` (as in tests using ``override_settings``).

A new setting is one line in :data:`DEFAULTS` (with a comment), one annotation in
:class:`VoiceconvSettings` and one row in the README's settings table; tests check all three.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from voiceconv.coercion import coerce
from voiceconv.exceptions import ConfigurationError

DEFAULTS: dict[str, Any] = {
    # --- the speech model and its session -------------------------------------------------
    # Realtime model named in the connection URL. Current, non-deprecated family.
    "MODEL": "gpt-realtime-2.1",
    # Output voice (alloy ash ballad coral echo sage shimmer verse marin cedar), or a custom
    # voice's id "voice_…" (or {"id": "voice_…"}) on models that take custom voices.
    "VOICE": "marin",
    # System instructions for the agent.
    "INSTRUCTIONS": (
        "You are a friendly, concise phone assistant. Speak naturally, keep answers short, "
        "and ask one question at a time."
    ),
    # What the agent is asked to say when the call connects ("" = wait for the caller).
    "GREETING": "Greet the caller briefly and ask how you can help.",
    # audio.input.turn_detection (GA shape). It must be on (check voiceconv.E003); with
    # create_response False the bridge asks for each answer once the turn is committed.
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
    # reasoning.effort for reasoning models ("minimal", "low", "medium", "high", "xhigh");
    # None = omit. Left out for models that do not reason (voiceconv.capabilities).
    "REASONING_EFFORT": None,
    # reasoning.effort of the greeting's response alone (None = the session's): "minimal"
    # gets the first words out soonest.
    "GREETING_REASONING_EFFORT": None,
    # parallel_tool_calls for reasoning models (True/False); None = omit (the model's default).
    "PARALLEL_TOOL_CALLS": None,
    # truncation: "auto", "disabled", or {"type": "retention_ratio", "retention_ratio": 0.8,
    # "token_limits": {"post_instructions": 8000}} (reasoning models); None = omit.
    "TRUNCATION": None,
    # audio.input.transcription.delay for gpt-realtime-whisper ("minimal" … "xhigh"); None = omit.
    "TRANSCRIPTION_DELAY": None,
    # Session options of models voiceconv.capabilities does not list, by model name:
    # {"gpt-realtime-3": {"reasoning": True, "parallel_tool_calls": True, ...}}.
    "MODEL_CAPABILITIES": {},
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
    # Path of the browser softphone's websocket route (as mounted in the project's URLRouter).
    "SOFTPHONE_PATH": "/voiceconv/softphone/stream/",
    # Check X-Twilio-Signature on webhooks and the stream handshake. Turn off only for local
    # experiments; a system check warns when it is off outside DEBUG.
    "VALIDATE_TWILIO_SIGNATURE": True,
    # Require the per-call stream token minted by the webhook in the stream's start message.
    "REQUIRE_STREAM_TOKEN": True,
    # With signature checks on, a stream upgrade without X-Twilio-Signature is refused; allow
    # it only behind a proxy that strips the header (the stream token still binds the call).
    "ALLOW_UNSIGNED_STREAMS": False,
    # Seconds a stream may stay open without its start message before it is closed.
    "STREAM_START_TIMEOUT": 5.0,
    # Seconds the database work at stream start (claim the call, load agent and tools) may
    # take; beyond it the call goes on with the default configuration.
    "START_DATABASE_TIMEOUT": 5.0,
    # Seconds a stream token stays valid after the webhook answered.
    "STREAM_TOKEN_MAX_AGE": 120,
    # Forward caller key presses to the model as conversation items.
    "FORWARD_DTMF": True,
    # Text of the item sent to the model for a key press; {digit} is replaced.
    "DTMF_TEMPLATE": "[The caller pressed {digit} on their phone keypad.]",
    # Key presses in quick succession (a PIN, a menu choice) reach the model as one item once
    # the caller has pressed nothing for this many seconds (0 = each key at once).
    "DTMF_PAUSE_SECONDS": 1.0,
    # --- limits ---------------------------------------------------------------------------
    # Caller audio buffered while the OpenAI session opens (ms); older audio is dropped.
    "EARLY_AUDIO_BUFFER_MS": 5000,
    # Seconds to wait for the Realtime connection and session.updated before giving up.
    "CONNECT_TIMEOUT": 10.0,
    # Seconds a session pre-connected while the phone rings (Agent.preconnect) waits for its
    # stream before it is closed (the stream then came to another process, or never).
    "PRECONNECT_TIMEOUT": 20.0,
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
    # Prices by model, over the built-in list prices (voiceconv.pricing): USD per 1M tokens,
    # {"gpt-realtime-2.1": {"input_text": "4.00", "input_audio": "32.00", ...}}, and for
    # GPT-Live USD per minute, {"gpt-live-1": {"session_active_minute": "0.05",
    # "session_paused_minute": "0.02"}}.
    "PRICES": {},
    # Most call records (transcript turns, usage, tool calls, call start/end) the process holds
    # while the database is unavailable; beyond it new records are dropped, each with an ERROR
    # line (about 1-2 KB each: the default bounds the backlog to a few hundred MB).
    "RECORDS_MAX_PENDING": 100_000,
    # Origin that Twilio REST requests go to instead of Twilio's (tests, on-premises proxies).
    "TWILIO_API_BASE": "",
    # --- live calls, control, metrics, health (voiceconv.live, .control, .metrics, .health) ---
    # Seconds between a process's heartbeats for the calls it holds.
    "HEARTBEAT_SECONDS": 10.0,
    # A call whose heartbeat is older than this (a crashed process's) is marked ended ("lost").
    "LIVE_TIMEOUT_SECONDS": 45.0,
    # Seconds voiceconv.control waits for the process holding a call to acknowledge a request.
    "CONTROL_TIMEOUT": 5.0,
    # Bearer token for the metrics endpoint ("" = staff users only).
    "METRICS_TOKEN": "",
    # One caller frame in this many is timed from Twilio's socket to OpenAI's, for the
    # voiceconv_caller_audio_added_latency_seconds histogram (0 = none timed).
    "LATENCY_SAMPLE_FRAMES": 50,
    # On SIGTERM, seconds to keep serving the calls in progress while refusing new ones
    # (health answers 503, the webhook answers busy) before the server stops. None: until
    # they end, at most MAX_CALL_SECONDS + HANGUP_GRACE_SECONDS (no bound without a call
    # limit); 0: stop now, ending them (reason "shutdown").
    "DRAIN_SECONDS": None,
    # --- telephony: outbound calls, answering machines, recording, transfers ---------------
    # Caller ID of outbound calls for agents without a number of their own ("" = required).
    "OUTBOUND_CALLER_ID": "",
    # Per agent: most outbound calls in progress at once, and placed per minute (0 = no limit).
    "OUTBOUND_MAX_CONCURRENT": 5,
    "OUTBOUND_CALLS_PER_MINUTE": 10,
    # Seconds an outbound call may ring before Twilio gives up.
    "OUTBOUND_RING_TIMEOUT": 30,
    # Voicemail left by agents that leave one and have no message of their own.
    "VOICEMAIL_MESSAGE": (
        "Hello, this is an automated assistant returning your call. "
        "Please call us back at your convenience. Goodbye."
    ),
    # Said before a recorded call goes on, when the agent announces recordings.
    "RECORDING_ANNOUNCEMENT": "This call is recorded.",
    # Transfer targets every agent may use unless it has its own list (numbers, sip: URIs,
    # "+1415*" prefixes); empty = no transfers.
    "TRANSFER_ALLOW_LIST": [],
    # --- the SIP path (a SIP trunk pointed at OpenAI; no audio through this server) -------
    # Secret of the OpenAI project webhook (whsec_...) that signs realtime.call.incoming;
    # "" = the OPENAI_WEBHOOK_SECRET environment variable. Without one, every webhook is
    # refused.
    "OPENAI_WEBHOOK_SECRET": "",
    # SIP status answered when no agent takes the call (no enabled agent for the number and
    # no default agent) and when MAX_CONCURRENT_CALLS calls are in progress.
    "SIP_REJECT_NO_AGENT_STATUS": 404,
    "SIP_REJECT_BUSY_STATUS": 486,
    # --- GPT-Live backend (agents whose backend is "gpt-live") ----------------------------
    # GPT-Live model (gpt-live-1, gpt-live-1.1), sent in session.start.
    "GPT_LIVE_MODEL": "gpt-live-1",
    # Responses model GPT-Live delegates tool calls to (the tools themselves run here).
    "GPT_LIVE_DELEGATION_MODEL": "gpt-5-mini",
    # Caller/assistant transcript fragments further apart than this start a new turn (ms).
    "GPT_LIVE_TURN_GAP_MS": 800,
    # Recorded clips GPT-Live agents play word for word (an agent's opening clip), by name:
    # {"notice": {"path": "clips/notice.wav", "text": "This call is recorded."}} or
    # {"notice": "clips/notice.wav"}; WAV, mono 16-bit PCM at 24000 Hz, at most 30 s.
    "CLIPS": {},
    # Seconds the human's phone rings in a warm transfer before the caller is told and
    # returned to the agent.
    "WARM_TRANSFER_RING_TIMEOUT": 20,
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


@dataclass(frozen=True, slots=True)
class CallLimits:
    """How far one call may go, in milliseconds of call time (Twilio's media clock); 0 = off."""

    #: Longest call; the caller is warned ``end_warning_ms`` before it ends.
    max_call_ms: int
    end_warning_ms: int
    #: A silent caller is asked whether they are still there, then hung up on.
    idle_reprompt_ms: int
    idle_hangup_ms: int
    #: Caller audio buffered while the Realtime session opens.
    early_audio_ms: int
    #: Key presses closer together than this are sent to the model as one group.
    dtmf_pause_ms: int


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long voiceconv waits, in seconds of wall-clock time."""

    #: For the Realtime connection and ``session.updated``.
    connect: float
    #: For the goodbye to be heard before hanging up anyway.
    hangup_grace: float
    #: For the stream of a session pre-connected while the phone rang.
    preconnect: float
    #: Before a slow tool's holding line is said.
    tool_holding: float
    #: For a tool, unless its definition or decorator says otherwise.
    tool: float
    #: For the stream to present the webhook's token.
    stream_token_max_age: float
    #: For Twilio's ``start`` message once the stream's socket is open.
    stream_start: float
    #: For the database at stream start (claiming the call, loading its agent).
    start_database: float
    #: For a live call to acknowledge a control request.
    control: float
    #: For live calls to end on SIGTERM before the server stops (0 = do not wait; ``inf``:
    #: until they end).
    drain: float
    #: Between a live call's heartbeats.
    heartbeat: float
    #: Without a heartbeat before a call counts as lost.
    live: float


def _seconds_to_ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


class VoiceconvSettings:
    """Typed attribute access to ``settings.VOICECONV`` over :data:`DEFAULTS`."""

    # The type of every key in DEFAULTS, in the same order.
    MODEL: str
    VOICE: str | dict[str, Any]
    INSTRUCTIONS: str
    GREETING: str
    TURN_DETECTION: dict[str, Any] | None
    TRANSCRIPTION_MODEL: str | None
    TRANSCRIPTION_LANGUAGE: str
    NOISE_REDUCTION: str | None
    SPEED: float
    REASONING_EFFORT: str | None
    GREETING_REASONING_EFFORT: str | None
    PARALLEL_TOOL_CALLS: bool | None
    TRUNCATION: str | dict[str, Any] | None
    TRANSCRIPTION_DELAY: str | None
    MODEL_CAPABILITIES: dict[str, Any]
    MAX_OUTPUT_TOKENS: int | str
    SESSION_EXTRA: dict[str, Any]
    PUBLIC_URL: str
    STREAM_PATH: str
    SOFTPHONE_PATH: str
    VALIDATE_TWILIO_SIGNATURE: bool
    REQUIRE_STREAM_TOKEN: bool
    ALLOW_UNSIGNED_STREAMS: bool
    STREAM_START_TIMEOUT: float
    START_DATABASE_TIMEOUT: float
    STREAM_TOKEN_MAX_AGE: float
    FORWARD_DTMF: bool
    DTMF_TEMPLATE: str
    DTMF_PAUSE_SECONDS: float
    EARLY_AUDIO_BUFFER_MS: int
    CONNECT_TIMEOUT: float
    PRECONNECT_TIMEOUT: float
    REALTIME_RECONNECT_ATTEMPTS: int
    HANGUP_GRACE_SECONDS: float
    MAX_CALL_SECONDS: float
    CALL_END_WARNING_SECONDS: float
    IDLE_REPROMPT_SECONDS: float
    IDLE_HANGUP_SECONDS: float
    TOOL_HOLDING_DELAY: float
    MAX_CONCURRENT_CALLS: int
    BUSY_MESSAGE: str
    APOLOGY_AUDIO: str | None
    TOOL_TIMEOUT: float
    PRICES: dict[str, Any]
    RECORDS_MAX_PENDING: int
    TWILIO_API_BASE: str
    HEARTBEAT_SECONDS: float
    LIVE_TIMEOUT_SECONDS: float
    CONTROL_TIMEOUT: float
    METRICS_TOKEN: str
    LATENCY_SAMPLE_FRAMES: int
    DRAIN_SECONDS: float | None
    OUTBOUND_CALLER_ID: str
    OUTBOUND_MAX_CONCURRENT: int
    OUTBOUND_CALLS_PER_MINUTE: int
    OUTBOUND_RING_TIMEOUT: int
    VOICEMAIL_MESSAGE: str
    RECORDING_ANNOUNCEMENT: str
    TRANSFER_ALLOW_LIST: list[str]
    OPENAI_WEBHOOK_SECRET: str
    SIP_REJECT_NO_AGENT_STATUS: int
    SIP_REJECT_BUSY_STATUS: int
    GPT_LIVE_MODEL: str
    GPT_LIVE_DELEGATION_MODEL: str
    GPT_LIVE_TURN_GAP_MS: int
    CLIPS: dict[str, Any]
    WARM_TRANSFER_RING_TIMEOUT: int
    ON_USER_MESSAGE: Callable[..., Any] | None
    ON_ASSISTANT_MESSAGE: Callable[..., Any] | None
    OPENAI_CLIENT_FACTORY: Callable[..., Any] | None

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}
        self._limits: CallLimits | None = None
        self._timeouts: Timeouts | None = None

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
        annotation = setting_types().get(name)
        if annotation is not None:
            value = coerce(name, value, annotation)
        self._cache[name] = value
        return value

    @property
    def limits(self) -> CallLimits:
        """``MAX_CALL_SECONDS`` and friends as one object, in milliseconds of call time."""
        if self._limits is None:
            self._limits = CallLimits(
                max_call_ms=_seconds_to_ms(self.MAX_CALL_SECONDS),
                end_warning_ms=_seconds_to_ms(self.CALL_END_WARNING_SECONDS),
                idle_reprompt_ms=_seconds_to_ms(self.IDLE_REPROMPT_SECONDS),
                idle_hangup_ms=_seconds_to_ms(self.IDLE_HANGUP_SECONDS),
                early_audio_ms=max(0, self.EARLY_AUDIO_BUFFER_MS),
                dtmf_pause_ms=_seconds_to_ms(self.DTMF_PAUSE_SECONDS),
            )
        return self._limits

    @property
    def timeouts(self) -> Timeouts:
        """``CONNECT_TIMEOUT`` and friends as one object, in seconds."""
        if self._timeouts is None:
            self._timeouts = Timeouts(
                connect=self.CONNECT_TIMEOUT,
                preconnect=self.PRECONNECT_TIMEOUT,
                hangup_grace=self.HANGUP_GRACE_SECONDS,
                tool_holding=self.TOOL_HOLDING_DELAY,
                tool=self.TOOL_TIMEOUT,
                stream_token_max_age=self.STREAM_TOKEN_MAX_AGE,
                stream_start=self.STREAM_START_TIMEOUT,
                start_database=self.START_DATABASE_TIMEOUT,
                control=self.CONTROL_TIMEOUT,
                drain=self._drain_seconds(),
                heartbeat=self.HEARTBEAT_SECONDS,
                live=self.LIVE_TIMEOUT_SECONDS,
            )
        return self._timeouts

    def _drain_seconds(self) -> float:
        """``DRAIN_SECONDS``, or (None) as long as a call in progress may still last."""
        if self.DRAIN_SECONDS is not None:
            return max(0.0, self.DRAIN_SECONDS)
        if self.MAX_CALL_SECONDS <= 0:
            return math.inf
        return self.MAX_CALL_SECONDS + max(0.0, self.HANGUP_GRACE_SECONDS)

    def reload(self) -> None:
        self._cache.clear()
        self._limits = None
        self._timeouts = None


_TYPES: dict[str, Any] = {}


def setting_types() -> dict[str, Any]:
    """The declared type of each setting (resolved once from the annotations)."""
    if not _TYPES:
        hints = typing.get_type_hints(VoiceconvSettings)
        _TYPES.update({k: v for k, v in hints.items() if k.isupper()})
    return _TYPES


voiceconv_settings = VoiceconvSettings()


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting == "VOICECONV":
        voiceconv_settings.reload()


setting_changed.connect(_reload)
