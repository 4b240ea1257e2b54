"""The GPT-Live backend: the ``session.start`` config and the connection via the openai SDK.

The sibling of :mod:`voiceconv.realtime` for OpenAI's successor voice API (``protocols.md`` D2).
:class:`OpenAILiveBackend` has the same four methods as
:class:`~voiceconv.realtime.OpenAIRealtimeBackend` (connect, send, recv, close), so the
consumer runs both alike; the events it carries are GPT-Live's, handled by
:class:`~voiceconv.session.live_side.LiveCallSession`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from voiceconv.clips import Clip, ClipError, load_clip
from voiceconv.conf import voiceconv_settings
from voiceconv.realtime import websocket_options

logger = logging.getLogger("voiceconv.gpt_live")

#: Agent fields that mean nothing on GPT-Live (the model takes turns and transcribes itself).
REALTIME_ONLY_FIELDS = (
    "turn_detection_type", "vad_threshold", "vad_prefix_padding_ms", "vad_silence_duration_ms",
    "vad_idle_timeout_ms", "vad_eagerness", "vad_create_response", "vad_interrupt_response",
    "transcription_model", "transcription_language", "transcription_prompt", "noise_reduction",
    "speed", "reasoning_effort", "max_output_tokens",
)
#: Agent fields that mean nothing on Realtime.
LIVE_ONLY_FIELDS = ("live_delegation_model", "live_acknowledgement_delay_ms", "opening_clip")
LIVE_MODELS = ("gpt-live-1", "gpt-live-1.1")


def _pick(overrides: Mapping[str, Any], key: str, setting: str) -> Any:
    value = overrides.get(key)
    return getattr(voiceconv_settings, setting) if value is None else value


def live_function_tool(definition: Mapping[str, Any]) -> dict[str, Any]:
    """A voiceconv tool definition (Realtime shape) as a GPT-Live ``FunctionToolParam``."""
    tool: dict[str, Any] = {"type": "function", "name": str(definition["name"])}
    if definition.get("description"):
        tool["description"] = str(definition["description"])
    if definition.get("parameters") is not None:
        tool["parameters"] = dict(definition["parameters"])
    return tool


def build_live_session(
    overrides: Mapping[str, Any] | None = None, tools: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """The ``session`` object of ``session.start``: settings, then the agent's overrides.

    μ-law at 8000 Hz both ways (Twilio's payloads pass straight through), the voice, the
    instructions; with tools, a Responses delegation whose function calls run here
    (:data:`~voiceconv.session.live_rules.TOOLS_THROUGH_RESPONSES_DELEGATION`).
    """
    o = overrides or {}
    session: dict[str, Any] = {
        "model": str(o.get("model") or voiceconv_settings.GPT_LIVE_MODEL),
        "instructions": str(_pick(o, "instructions", "INSTRUCTIONS") or ""),
        "audio": {
            "format": {"type": "audio/pcmu", "rate": 8000},
            "output": {"voice": _pick(o, "voice", "VOICE")},
        },
    }
    if tools:
        delegation: dict[str, Any] = {
            "type": "responses",
            "responses": {
                "model": str(_pick(o, "delegation_model", "GPT_LIVE_DELEGATION_MODEL")),
                "tools": [live_function_tool(t) for t in tools],
            },
        }
        if o.get("acknowledgement_delay_ms") is not None:
            delegation["acknowledgement_delay_ms"] = int(o["acknowledgement_delay_ms"])
        session["delegation"] = delegation
    return session


def opening_clip_for(agent: Any) -> Clip | None:
    """The agent's opening clip, read (None without one; a clip that cannot be played is
    logged and the call goes on without it)."""
    name = str(getattr(agent, "opening_clip", "") or "")
    if not name or getattr(agent, "backend", "") != "gpt-live":
        return None
    try:
        return load_clip(name)
    except ClipError as exc:
        logger.warning("agent %s: opening clip not played: %s", getattr(agent, "slug", "?"), exc)
        return None


class OpenAILiveBackend:
    """GPT-Live through the official SDK: ``client.live.connect()`` (``…/live/sessions``).

    The SDK opens the socket (``OPENAI_BASE_URL`` or ``websocket_base_url``, authentication)
    and closes it; voiceconv builds and parses the events itself and sends them as raw text
    (the first one ``session.start``). The SDK's own reconnection stays off: a dropped session
    is replaced by the consumer with the conversation in the new ``session.start``.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self._manager: Any = None
        self._conn: Any = None

    @property
    def connection(self) -> Any:
        return self._conn

    async def connect(self) -> None:
        self._manager = self.client.live.connect(
            websocket_connection_options=websocket_options(self.client))
        self._conn = await self._manager.enter()

    async def send(self, text: str) -> None:
        await self._conn.send_raw(text)

    async def recv(self) -> bytes | str:
        raw: bytes = await self._conn.recv_bytes()
        return raw

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
