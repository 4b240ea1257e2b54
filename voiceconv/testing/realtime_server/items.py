"""The stand-in's records of a conversation: items, streamed messages, response runs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from voiceconv.testing.audio import BYTES_PER_MS
from voiceconv.testing.realtime_server.script import ScriptedResponse

__all__ = ["Item", "MessageStream", "ResponseRun"]


@dataclass
class Item:
    """A conversation item as the stand-in keeps it (audio counted, not stored)."""

    id: str
    type: str
    role: str | None = None
    has_audio: bool = False
    audio_bytes: int = 0
    bytes_per_ms: int = BYTES_PER_MS
    transcript: str = ""
    call_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def audio_ms(self) -> int:
        return self.audio_bytes // self.bytes_per_ms


@dataclass
class MessageStream:
    """An assistant message being streamed: its item, ids and where its deltas are."""

    item: Item
    previous: str | None
    ids: dict[str, Any]
    text_mode: bool
    bpm: int
    pieces: list[str]
    plan: list[int]
    seq: int
    next_chunk: int = 0
    done_ms: int = 0
    said: int = 0

    @property
    def spoken(self) -> str:
        return "".join(self.pieces[: self.said])


@dataclass
class ResponseRun:
    """A response being generated (or cancelled)."""

    id: str
    script: ScriptedResponse
    request: dict[str, Any]
    task: asyncio.Task[None] | None = None
    cancel_reason: str | None = None
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    generating: bool = True
    audio_ms_generated: int = 0
    #: SIP sideband: ``output_audio_buffer.started`` was sent for this response.
    server_playing: bool = False
