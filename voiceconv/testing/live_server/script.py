"""The scripted GPT-Live model: what its answers say and do, test by test."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from voiceconv.testing.audio import speech_like

__all__ = ["ScriptedDelegation", "ScriptedLiveAnswer"]


@dataclass
class ScriptedDelegation:
    """A function call the delegated Responses model makes (run by the client)."""

    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    call_id: str | None = None

    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments, separators=(",", ":"))


@dataclass
class ScriptedLiveAnswer:
    """What the model says next.

    ``audio`` is the exact μ-law it streams (default: ``audio_ms`` of speech-like noise, 60 ms
    per character of ``text`` by default); ``text`` goes out as timed
    ``session.output_transcript.delta`` fragments, one word each, spread over the audio.
    ``delegate`` first delegates a function call to the client (``session.delegation.created``
    and the Responses model's ``function_call`` in ``response.event``); the answer is spoken
    once the client has answered with ``response.item.create`` + ``response.create``.
    ``drop_after_ms`` closes the socket (1011) once that much of the audio was streamed.
    """

    text: str = "Hello! How can I help you today?"
    audio: bytes | None = None
    audio_ms: int | None = None
    delegate: ScriptedDelegation | None = None
    drop_after_ms: int | None = None

    def audio_bytes(self, seed: int = 0) -> bytes:
        if self.audio is not None:
            return self.audio
        ms = self.audio_ms if self.audio_ms is not None else max(200, 60 * len(self.text))
        return speech_like(ms, seed=seed)
