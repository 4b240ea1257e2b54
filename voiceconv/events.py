"""Call-level records that leave the audio path.

The call core (:mod:`voiceconv.session`) produces these; the consumer hands them to the
call's writer task, which persists them, fires signals and runs user callbacks. None of
them is created per audio frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["caller", "assistant", "tool", "system", "dtmf", "control"]


@dataclass(frozen=True, slots=True)
class TranscriptTurn:
    """One finished turn of the conversation."""

    role: Role
    text: str
    #: Realtime item id (``item_…``) when the turn is a conversation item.
    item_id: str | None = None
    #: Call time (ms since the stream started, Twilio's media clock) when the turn began.
    offset_ms: int | None = None
    #: Assistant turns: caller stopped speaking → first assistant audio sent (ms).
    latency_ms: int | None = None
    #: Assistant turns: the caller barged in before the whole turn was played.
    interrupted: bool = False
    #: Assistant turns: audio milliseconds actually played to the caller.
    heard_ms: int | None = None
    #: Assistant turns: audio milliseconds generated for the turn.
    total_ms: int | None = None
    #: Assistant turns that were interrupted: the part of ``text`` the caller heard.
    heard_text: str | None = None
    #: Answers to the caller: ``speech_stopped`` received → the answer's first audio sent to
    #: Twilio (ms, monotonic clock); the sum of the two shares below.
    first_audio_ms: float | None = None
    #: Answers to the caller: the model's share, ``speech_stopped`` → first audio delta
    #: received (ms).
    model_ms: float | None = None
    #: Assistant turns: the bridge's share, first audio delta received → sent to Twilio (ms).
    bridge_ms: float | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage of one ``response.done``."""

    input_tokens: int = 0
    output_tokens: int = 0
    input_text_tokens: int = 0
    input_audio_tokens: int = 0
    input_cached_tokens: int = 0
    input_image_tokens: int = 0
    input_cached_text_tokens: int = 0
    input_cached_audio_tokens: int = 0
    input_cached_image_tokens: int = 0
    output_text_tokens: int = 0
    output_audio_tokens: int = 0

    @classmethod
    def from_response(cls, usage: dict[str, Any] | None) -> Usage:
        if not isinstance(usage, dict):
            return cls()
        ind = usage.get("input_token_details") or {}
        outd = usage.get("output_token_details") or {}
        cached = (ind.get("cached_tokens_details") if isinstance(ind, dict) else None) or {}

        def n(d: Any, key: str) -> int:
            v = d.get(key) if isinstance(d, dict) else None
            return v if isinstance(v, int) else 0

        return cls(
            input_tokens=n(usage, "input_tokens"),
            output_tokens=n(usage, "output_tokens"),
            input_text_tokens=n(ind, "text_tokens"),
            input_audio_tokens=n(ind, "audio_tokens"),
            input_cached_tokens=n(ind, "cached_tokens"),
            input_image_tokens=n(ind, "image_tokens"),
            input_cached_text_tokens=n(cached, "text_tokens"),
            input_cached_audio_tokens=n(cached, "audio_tokens"),
            input_cached_image_tokens=n(cached, "image_tokens"),
            output_text_tokens=n(outd, "text_tokens"),
            output_audio_tokens=n(outd, "audio_tokens"),
        )


@dataclass(slots=True)
class CallInfo:
    """What is known about the call when its stream starts; handed to hooks and tools."""

    call_sid: str
    stream_sid: str
    account_sid: str = ""
    from_number: str = ""
    to_number: str = ""
    direction: str = ""
    custom_parameters: dict[str, str] = field(default_factory=dict)
    #: Primary key of the ``voiceconv.Call`` row, when one exists.
    call_pk: int | None = None
    #: Primary key of the ``voiceconv.Agent`` row chosen for the call, when one exists.
    agent_pk: int | None = None


def our_number(direction: str, from_number: str, to_number: str) -> str:
    """The caller-facing number of ours, which chooses the agent: the number called for
    inbound calls, the number we call from for outbound ones (``Call.Direction``
    ``outbound-api`` and ``outbound-dial``)."""
    if direction in ("outbound-api", "outbound-dial"):
        return from_number
    return to_number
