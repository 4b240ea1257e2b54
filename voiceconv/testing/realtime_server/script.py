"""The scripted model: what the stand-in's responses say and do, test by test."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ScriptedFunctionCall", "ScriptedResponse"]


@dataclass
class ScriptedFunctionCall:
    """A function call the scripted response makes (``arguments`` dicts are JSON-encoded)."""

    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    call_id: str | None = None

    def arguments_json(self) -> str:
        """The ``arguments`` string as sent on the wire."""
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments, separators=(",", ":"))


@dataclass
class ScriptedResponse:
    """What the next response says.

    ``audio_ms`` defaults to 60 ms per character of ``text`` (at least 200 ms).
    ``function_calls`` follow the spoken part; with ``text=""`` and calls, no message item
    is produced. ``delay_ms`` is the latency before the first output item.
    ``speed_factor`` overrides the stand-in's pacing for this response.
    ``fail_with`` ends the response ``failed`` with that error code instead of output.

    The live service's other dynamics, per response:

    - ``preamble``: a short first assistant item ("One moment.") before the answer item, as
      ``gpt-realtime-2`` models speak; the answer's ``output_item.added`` and first
      ``overlap_chunks`` audio deltas go out before the preamble's ``output_audio.done`` /
      ``output_item.done``. ``preamble_audio_ms`` defaults like ``audio_ms``.
    - ``server_cancel_after_ms``: the service cancels the response itself once that much of
      the answer's audio was generated (``response.done`` ``cancelled``,
      ``server_cancel_reason``).
    - ``drop_after_ms``: the connection drops (close 1011) once that much audio was generated
      (mid-generation); ``0`` drops before any output.
    """

    text: str = "Hello! How can I help you today?"
    audio_ms: int | None = None
    function_calls: list[ScriptedFunctionCall] = field(default_factory=list)
    delay_ms: int = 0
    speed_factor: float | None = None
    fail_with: str | None = None
    preamble: str = ""
    preamble_audio_ms: int | None = None
    overlap_chunks: int = 2
    server_cancel_after_ms: int | None = None
    server_cancel_reason: str = "turn_detected"
    drop_after_ms: int | None = None

    def effective_audio_ms(self) -> int:
        """Audio duration of the spoken part (0 when there is none)."""
        if self.audio_ms is not None:
            return max(0, self.audio_ms)
        if not self.text and self.function_calls:
            return 0
        return max(200, 60 * len(self.text))

    def effective_preamble_ms(self) -> int:
        """Audio duration of the preamble item (0 when there is none)."""
        if not self.preamble:
            return 0
        if self.preamble_audio_ms is not None:
            return max(0, self.preamble_audio_ms)
        return max(200, 60 * len(self.preamble))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScriptedResponse:
        """Build from plain JSON data (for ``--responses`` files)."""
        values = dict(data)
        calls = [
            ScriptedFunctionCall(**call) if isinstance(call, Mapping) else call
            for call in values.pop("function_calls", [])
        ]
        return cls(function_calls=calls, **values)
