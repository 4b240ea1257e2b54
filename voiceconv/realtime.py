"""The OpenAI side: the GA session config and the Realtime connection.

Everything the rest of voiceconv knows about the speech backend goes through
:class:`RealtimeBackend` (connect, send, receive, close), so another backend (OpenAI's GPT-Live
API, say) can be added without touching the Twilio side or the call core.
"""

from __future__ import annotations

import logging
import os
import ssl
import struct
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from django.conf import settings

from voiceconv.capabilities import capabilities, voice_value
from voiceconv.conf import DEFAULTS, voiceconv_settings

logger = logging.getLogger("voiceconv.realtime")


def _pick(overrides: Mapping[str, Any], key: str) -> Any:
    value = overrides.get(key)
    if value is None:
        return getattr(voiceconv_settings, key.upper())
    return value


def build_session_config(
    overrides: Mapping[str, Any] | None = None, tools: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """The GA ``session`` object for ``session.update``: settings, then the agent's overrides.

    μ-law (``audio/pcmu``) in and out, so Twilio's payloads pass straight through. Options
    the session's model does not accept (:mod:`voiceconv.capabilities`: reasoning, parallel
    tool calls, retention-ratio truncation, custom voices) are left out rather than sent to
    be refused with the whole update; the agent form and the system checks report them. The
    GA shape and its rules (one unknown key rejects the whole update) are in
    ``docs/protocols.md`` §R2.
    """
    o = overrides or {}
    model = session_model(o)
    caps = capabilities(model)
    dropped: list[str] = []
    audio_input: dict[str, Any] = {"format": {"type": "audio/pcmu"}}
    noise = _pick(o, "noise_reduction")
    audio_input["noise_reduction"] = {"type": noise} if noise else None
    transcription_model = _pick(o, "transcription_model")
    if transcription_model:
        transcription: dict[str, Any] = {"model": transcription_model}
        language = _pick(o, "transcription_language")
        if language:
            transcription["language"] = language
        prompt = o.get("transcription_prompt")
        if prompt:
            transcription["prompt"] = prompt
        delay = _pick(o, "transcription_delay")
        if delay and transcription_model == "gpt-realtime-whisper":
            transcription["delay"] = delay
        audio_input["transcription"] = transcription
    else:
        audio_input["transcription"] = None
    # None: the setting; False (or an empty value): server VAD off.
    turn_detection = _pick(o, "turn_detection")
    audio_input["turn_detection"] = dict(turn_detection) if turn_detection else None

    audio_output: dict[str, Any] = {
        "format": {"type": "audio/pcmu"},
        "voice": voice_value(_pick(o, "voice")),
        "speed": float(_pick(o, "speed")),
    }
    session: dict[str, Any] = {
        "type": "realtime",
        "output_modalities": ["audio"],
        "instructions": _pick(o, "instructions"),
        "audio": {"input": audio_input, "output": audio_output},
        "max_output_tokens": _pick(o, "max_output_tokens"),
    }
    if tools:
        session["tools"] = [dict(t) for t in tools]
        session["tool_choice"] = "auto"
    if isinstance(audio_output["voice"], dict) and not caps.custom_voices:
        dropped.append("custom voice")
        audio_output["voice"] = DEFAULTS["VOICE"]
    effort = _pick(o, "reasoning_effort")
    if effort:
        if caps.reasoning:
            session["reasoning"] = {"effort": effort}
        else:
            dropped.append("reasoning")
    parallel = _pick(o, "parallel_tool_calls")
    if parallel is not None:
        if caps.parallel_tool_calls:
            session["parallel_tool_calls"] = bool(parallel)
        else:
            dropped.append("parallel_tool_calls")
    truncation = _pick(o, "truncation")
    if truncation:
        if isinstance(truncation, Mapping) and not caps.retention_ratio:
            dropped.append("retention-ratio truncation")
        else:
            session["truncation"] = (
                dict(truncation) if isinstance(truncation, Mapping) else truncation
            )
    if dropped:
        logger.info(
            "%s does not accept %s: left out of the session", model, ", ".join(dropped)
        )
    extra = _pick(o, "session_extra")
    if extra:
        session.update(dict(extra))
    return session


def session_model(overrides: Mapping[str, Any] | None = None) -> str:
    """The model named in the connection URL."""
    return str(_pick(overrides or {}, "model"))


def interrupt_response_enabled(session: Mapping[str, Any]) -> bool:
    td = ((session.get("audio") or {}).get("input") or {}).get("turn_detection")
    if not td:
        return False
    return bool(td.get("interrupt_response", True))


def server_idle_timeout(session: Mapping[str, Any]) -> bool:
    """Whether server VAD reprompts a silent caller itself (``idle_timeout_ms`` set)."""
    td = ((session.get("audio") or {}).get("input") or {}).get("turn_detection")
    return bool(td and td.get("type") == "server_vad" and td.get("idle_timeout_ms"))


def create_response_enabled(session: Mapping[str, Any]) -> bool:
    """Whether the server answers the caller's turns itself (server VAD ``create_response``)."""
    td = ((session.get("audio") or {}).get("input") or {}).get("turn_detection")
    if not td:
        return True  # no turn detection: nothing to answer automatically (refused by checks)
    return bool(td.get("create_response", True))


def warm_up() -> bool:
    """Pay at start-up what the first call would otherwise pay on the event loop.

    Importing the ``openai`` SDK and building the process's client and TLS context take about
    1.5 s of CPU on the benchmark's machine; done by the first call, that blocks every call and
    webhook of the process meanwhile (the first burst after a deploy). Called when the server
    starts (``voiceconv.health.DrainingMiddleware``: at ASGI ``lifespan.startup``, or in a
    thread at the first connection where the server has no lifespan). With
    ``OPENAI_CLIENT_FACTORY`` set only the SDK is imported. Returns whether a client was built.
    """
    # Imported here, not at the top: importing voiceconv (settings, checks, the test kit,
    # management commands) does not pay for the SDK; a server does, once, here.
    import openai  # noqa: F401

    if voiceconv_settings.OPENAI_CLIENT_FACTORY is not None:
        return False
    try:
        client = default_openai_client()
    except Exception as exc:  # no key yet: the first call reports it
        logger.info("OpenAI client not built at start-up (%s); the first call builds it", exc)
        return False
    websocket_options(client)
    logger.info("OpenAI client ready (warmed up before the first call)")
    return True


#: One TLS context per CA configuration, shared by every call's OpenAI connection.
_tls_contexts: dict[tuple[str | None, str | None], ssl.SSLContext] = {}


def websocket_options(client: Any) -> dict[str, Any]:
    """``websocket_connection_options`` for the SDK's ``connect()``: one shared TLS context.

    Without one, ``websockets`` builds a new default context for every ``wss://`` connection,
    loading the system's CA bundle each time: 30 ms or more of CPU on the event loop per call
    start on a Debian machine, in the middle of other calls' audio. The context honours
    ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` as the default one does (one context per setting).
    Plain ``ws://`` (a local stand-in) takes no TLS options.
    """
    base = getattr(client, "websocket_base_url", None) or getattr(client, "base_url", "")
    if str(base).partition(":")[0].lower() not in ("https", "wss"):
        return {}
    key = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    context = _tls_contexts.get(key)
    if context is None:
        context = _tls_contexts[key] = ssl.create_default_context()
    return {"ssl": context}


@runtime_checkable
class RealtimeBackend(Protocol):
    """A speech-to-speech connection for one call."""

    async def connect(self) -> None: ...
    async def send(self, text: str) -> None: ...
    async def recv(self) -> bytes | str: ...
    async def close(self) -> None: ...

    @property
    def connection(self) -> Any:
        """The live connection object handed to tools (``connection`` parameter)."""
        ...


class OpenAIRealtimeBackend:
    """The OpenAI Realtime API through the official ``openai`` SDK.

    The SDK opens the connection (URL, ``OPENAI_BASE_URL``, authentication, headers) and
    closes it. Events are built and parsed once by voiceconv: frames go through the SDK
    connection's websocket as raw text, without the typed helpers' per-event transform or
    the send queue the SDK keeps for its own reconnection (voiceconv reconnects itself, with
    the conversation re-seeded). Tools get the SDK connection object as ``connection``.
    """

    #: Write each event as one pre-built, masked frame straight to the transport while the
    #: connection is open and not flow-controlled (see :func:`client_text_frame`); otherwise,
    #: and with any extension negotiated, through ``websockets``' own ``send``.
    prebuilt_frames: bool = True

    def __init__(self, client: Any, model: str, *, call_id: str | None = None) -> None:
        self.client = client
        self.model = model
        #: Attach to this call's sideband (OpenAI's SIP path) instead of opening a session.
        self.call_id = call_id
        self._manager: Any = None
        self._conn: Any = None
        self._ws: Any = None
        self._transport: Any = None

    @property
    def connection(self) -> Any:
        return self._conn

    async def connect(self) -> None:
        options = websocket_options(self.client)
        if self.call_id:
            self._manager = self.client.realtime.connect(
                call_id=self.call_id, websocket_connection_options=options)
        else:
            self._manager = self.client.realtime.connect(
                model=self.model, websocket_connection_options=options)
        self._conn = await self._manager.enter()
        ws = getattr(self._conn, "_connection", None)
        # The websockets connection under the SDK's, where this SDK version exposes it.
        self._ws = ws if callable(getattr(ws, "send", None)) else None
        self._transport = None
        if self.prebuilt_frames and self._ws is not None:
            protocol = getattr(self._ws, "protocol", None)
            if protocol is not None and not getattr(protocol, "extensions", None):
                self._transport = getattr(self._ws, "transport", None)

    async def send(self, text: str) -> None:
        ws = self._ws
        if ws is None:
            await self._conn.send_raw(text)
            return
        transport = self._transport
        if (
            transport is not None
            and ws.protocol.state is _OPEN
            and ws.send_in_progress is None
            and not ws.paused
            and not transport.is_closing()
        ):
            # What websockets' send would put on the wire, without its per-frame context
            # manager, drain and os.urandom call (a text frame is all the protocol does).
            transport.write(client_text_frame(text.encode()))
            return
        await ws.send(text)

    async def recv(self) -> bytes | str:
        if self._ws is not None:
            data: bytes = await self._ws.recv(decode=False)
            return data
        raw: bytes = await self._conn.recv_bytes()
        return raw

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()


try:
    from websockets.protocol import State as _State
    from websockets.speedups import apply_mask as _apply_mask
except ImportError:  # pragma: no cover - websockets without its C extension
    from websockets.protocol import State as _State
    from websockets.utils import apply_mask as _apply_mask

_OPEN = _State.OPEN
_MASKS = bytearray()


def client_text_frame(data: bytes) -> bytes:
    """One final, masked text frame (RFC 6455 5.2) carrying ``data``, as a client sends it.

    Masking keys come from ``os.urandom`` like websockets' own, fetched 4 KiB at a time.
    """
    global _MASKS
    if len(_MASKS) < 4:
        _MASKS = bytearray(os.urandom(4096))
    mask = bytes(_MASKS[-4:])
    del _MASKS[-4:]
    n = len(data)
    if n < 126:
        head = struct.pack("!BB", 0x81, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x81, 0xFE, n)
    else:
        head = struct.pack("!BBQ", 0x81, 0xFF, n)
    return head + mask + _apply_mask(data, mask)


_clients: dict[tuple[str | None, str | None], Any] = {}


def default_openai_client() -> Any:
    """An ``AsyncOpenAI`` client: ``VOICECONV['OPENAI_CLIENT_FACTORY']`` or the environment.

    ``AsyncOpenAI()`` reads ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL``; a project setting
    ``OPENAI_API_KEY`` is used when the environment has none. One client serves every call
    of the process (building one costs a TLS context, tens of milliseconds of CPU).
    """
    factory = voiceconv_settings.OPENAI_CLIENT_FACTORY
    if factory is not None:
        return factory()
    # Imported when the first client is built: importing voiceconv (settings, checks, the
    # test kit) does not pay for the openai SDK, and a project's own factory never needs it.
    from openai import AsyncOpenAI

    key = os.environ.get("OPENAI_API_KEY") or getattr(settings, "OPENAI_API_KEY", "") or None
    cache_key = (key, os.environ.get("OPENAI_BASE_URL"))
    client = _clients.get(cache_key)
    if client is None:
        client = _clients[cache_key] = AsyncOpenAI(api_key=key)
    return client
