"""The scripted GPT-Live model: what its answers say and do, test by test."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from voiceconv.testing.audio import speech_like
from voiceconv.testing.realtime_server.script import ScriptedFunctionCall

__all__ = ["ScriptedDelegation", "ScriptedFragment", "ScriptedLiveAnswer"]

#: A function call the delegated Responses model makes (run by the client): the Realtime
#: stand-in's :class:`ScriptedFunctionCall` (``name``, ``arguments``, ``call_id``).
ScriptedDelegation = ScriptedFunctionCall


@dataclass
class ScriptedFragment:
    """One ``session.output_transcript.delta`` of an answer: its text and its span, in ms from
    the start of the answer's audio (sent once the audio has been streamed that far)."""

    delta: str
    start_ms: int
    end_ms: int


@dataclass
class ScriptedLiveAnswer:
    """What the model says next.

    ``audio`` is the exact μ-law it streams (default: ``audio_ms`` of speech-like noise, 60 ms
    per character of ``text`` by default); ``text`` goes out as timed
    ``session.output_transcript.delta`` fragments, one word each, spread over the audio, unless
    ``fragments`` times them exactly (a pause longer than the client's gap then splits the
    answer into two turns).

    Delegation (the answer is then the delegation alone, and the next answer is spoken once
    the client has done its part): ``delegate`` delegates a function call to a Responses model
    (``session.delegation.created`` and the Responses model's ``function_call`` in
    ``response.event``), answered with ``response.item.create`` + ``response.create``;
    ``delegate_to_client`` delegates to the client (``session.delegation.created``, target
    ``client``: an id, no task), answered by commentary, thinking or instructions carrying
    that ``delegation_id``.

    Faults: ``drop_after_ms`` closes the socket (1011) once that much of the audio was
    streamed; ``fail_with`` sends an ``error`` with that code instead of the answer;
    ``close_reason`` ends the session instead (``session.closed`` with that reason,
    ``expired`` or ``content``, then the socket closes).
    """

    text: str = "Hello! How can I help you today?"
    audio: bytes | None = None
    audio_ms: int | None = None
    fragments: list[ScriptedFragment] | None = None
    delegate: ScriptedFunctionCall | None = None
    delegate_to_client: bool = False
    drop_after_ms: int | None = None
    fail_with: str | None = None
    close_reason: str | None = None

    def audio_bytes(self, seed: int = 0) -> bytes:
        if self.audio is not None:
            return self.audio
        ms = self.audio_ms if self.audio_ms is not None else max(200, 60 * len(self.text))
        return speech_like(ms, seed=seed)

    def timed_fragments(self, audio_ms: int) -> list[ScriptedFragment]:
        """The answer's transcript fragments, timed from the start of its audio."""
        if self.fragments is not None:
            return list(self.fragments)
        words = self.text.split()
        n = max(1, len(words))
        return [
            ScriptedFragment((" " if i else "") + word, audio_ms * i // n, audio_ms * (i + 1) // n)
            for i, word in enumerate(words)
        ]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScriptedLiveAnswer:
        """Build from plain JSON data (for ``--answers`` files): ``delegate`` an object like
        ``{"name": "get_time", "arguments": {}}``, ``fragments`` a list of
        ``{"delta", "start_ms", "end_ms"}`` (``audio`` is not taken from JSON)."""
        values = {k: v for k, v in data.items() if k != "audio"}
        delegate = values.pop("delegate", None)
        fragments = values.pop("fragments", None)
        return cls(
            delegate=ScriptedFunctionCall(**delegate) if isinstance(delegate, Mapping)
            else delegate,
            fragments=None if fragments is None else [
                ScriptedFragment(**f) if isinstance(f, Mapping) else f for f in fragments],
            **values,
        )
