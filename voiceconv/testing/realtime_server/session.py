"""One Realtime connection of the stand-in: its state, recordings, test hooks and faults.

The session is layered, one concern a module: :mod:`.base` (state, lifecycle, the wire,
``session.update``), :mod:`.conversation` (items), :mod:`.responses` (scripted responses),
and here input audio with its VAD on the input clock.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from voiceconv.testing.audio import pcm16_rms, rms
from voiceconv.testing.realtime_server.config import (
    _new_id,
)
from voiceconv.testing.realtime_server.protocol import (
    _ClientError,
)

if TYPE_CHECKING:
    pass

from voiceconv.testing.realtime_server.base import SESSION_EXPIRED_MESSAGE, VAD_WINDOW_MS
from voiceconv.testing.realtime_server.items import Item
from voiceconv.testing.realtime_server.responses import Responses

__all__ = ["SESSION_EXPIRED_MESSAGE", "StandInSession"]

logger = logging.getLogger("voiceconv.testing.realtime_server")


class StandInSession(Responses):
    """One client connection: state, recordings, test hooks and fault injection.

    Recordings: ``received`` (parsed client events except appends), ``appends``
    (``(monotonic time, base64 as received)``), ``input_audio`` (decoded bytes),
    ``sent`` (every server event, in wire order), ``sent_deltas``
    (``(monotonic time at send, item_id, base64)``), ``truncates``
    (``(item_id, audio_end_ms, ok)``), ``response_requests`` (the ``response`` objects of
    client ``response.create`` events), ``errors`` (error events sent) and
    ``protocol_violations`` (schema problems in either direction when strict).
    """

    # ---- input audio and VAD ---------------------------------------------------------

    async def _handle_input_audio_buffer_append(self, event: dict[str, Any]) -> None:
        if self.call_id is not None:
            self.protocol_violations.append("client: audio appended on a SIP call's sideband")
        audio = event.get("audio")
        if not isinstance(audio, str):
            self.protocol_violations.append("client: append without an audio string")
            raise _ClientError(
                "missing_required_parameter",
                "Missing required parameter: 'audio'.",
                param="audio",
            )
        try:
            raw = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError) as exc:
            self.protocol_violations.append("client: append with invalid base64")
            raise _ClientError(
                "invalid_value",
                "Invalid 'audio'. Expected base64-encoded audio bytes.",
                param="audio",
            ) from exc
        self.input_audio += raw
        await self._feed_vad(raw)

    async def _feed_vad(self, raw: bytes) -> None:
        bpm = self._input_bytes_per_ms
        window = VAD_WINDOW_MS * bpm
        self._vad_pending += raw
        while len(self._vad_pending) >= window:
            chunk = bytes(self._vad_pending[:window])
            del self._vad_pending[:window]
            start_ms = self._clock_ms
            self._clock_ms += VAD_WINDOW_MS
            await self._vad_window(chunk, start_ms, start_ms + VAD_WINDOW_MS)

    def _energy(self, chunk: bytes) -> float:
        if self._input_bytes_per_ms == 48:
            return pcm16_rms(chunk)
        return rms(chunk)

    async def _vad_window(self, chunk: bytes, start_ms: int, end_ms: int) -> None:
        td = self.turn_detection
        if td is None:
            return
        threshold = float(td.get("threshold") or 0.5)
        voiced = self._energy(chunk) >= self.standin.vad_rms_threshold * threshold / 0.5
        if not self._speaking:
            if voiced:
                self._last_voiced_ms = end_ms
                padding = int(td.get("prefix_padding_ms") or 300)
                await self.trigger_speech_started(
                    audio_start_ms=max(self._buffer_start_ms, start_ms - padding)
                )
            elif self._idle_deadline_ms is not None and end_ms >= self._idle_deadline_ms:
                await self._idle_timeout(end_ms)
            return
        if voiced:
            self._last_voiced_ms = end_ms
        elif end_ms - self._last_voiced_ms >= self._silence_ms(td):
            await self.trigger_speech_stopped(audio_end_ms=self._last_voiced_ms)

    @staticmethod
    def _silence_ms(td: Mapping[str, Any]) -> int:
        if td.get("type") == "semantic_vad":
            return {"low": 1500, "high": 300}.get(td.get("eagerness") or "auto", 700)
        return int(td.get("silence_duration_ms") or 500)

    async def trigger_speech_started(self, audio_start_ms: int | None = None) -> str:
        """Emit ``speech_started`` now (as VAD would) and interrupt if configured; item id."""
        td = self.turn_detection or {}
        self._speaking = True
        self._idle_deadline_ms = None
        self._speech_item_id = _new_id("item")
        self._speech_start_ms = self.input_ms if audio_start_ms is None else audio_start_ms
        self._last_voiced_ms = max(self._last_voiced_ms, self._speech_start_ms)
        await self._emit(
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": self._speech_start_ms,
                "item_id": self._speech_item_id,
            }
        )
        if td.get("interrupt_response", True) and self.active is not None:
            await self.cancel_active("turn_detected")
        return self._speech_item_id

    async def trigger_speech_stopped(self, audio_end_ms: int | None = None) -> str:
        """Emit ``speech_stopped`` then commit (and respond, if configured); the user item id."""
        if not self._speaking or self._speech_item_id is None:
            await self.trigger_speech_started()
        assert self._speech_item_id is not None
        item_id = self._speech_item_id
        self._speaking = False
        self._speech_item_id = None
        end_ms = self.input_ms if audio_end_ms is None else audio_end_ms
        await self._emit(
            {
                "type": "input_audio_buffer.speech_stopped",
                "audio_end_ms": end_ms,
                "item_id": item_id,
            }
        )
        await self._commit(item_id)
        td = self.turn_detection or {}
        if td.get("create_response", True):
            if self.active is None:
                await self.start_response(
                    {}, created_delay_ms=self.standin.auto_response_created_delay_ms
                )
            else:
                logger.debug("stand-in: VAD response skipped, %s still active", self.active.id)
        return item_id

    async def _idle_timeout(self, end_ms: int) -> None:
        self._idle_deadline_ms = None
        item_id = _new_id("item")
        await self._emit(
            {
                "type": "input_audio_buffer.timeout_triggered",
                "audio_start_ms": self._buffer_start_ms,
                "audio_end_ms": end_ms,
                "item_id": item_id,
            }
        )
        await self._commit(item_id, transcribe=False)
        if self.active is None:
            await self.start_response({})

    async def _commit(self, item_id: str, *, transcribe: bool = True) -> None:
        previous = self.item_order[-1] if self.item_order else None
        self._buffer_start_ms = self.input_ms
        await self._emit(
            {
                "type": "input_audio_buffer.committed",
                "previous_item_id": previous,
                "item_id": item_id,
            }
        )
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        await self._add_item(Item(id=item_id, type="message", role="user", data=item), previous)
        if transcribe and self.config["audio"]["input"].get("transcription"):
            self._spawn(self._transcribe(item_id))

    async def _transcribe(self, item_id: str) -> None:
        transcript = self.standin.next_caller_transcript()
        await asyncio.sleep(0.01)
        await self._emit(
            {
                "type": "conversation.item.input_audio_transcription.delta",
                "item_id": item_id,
                "content_index": 0,
                "delta": transcript,
            }
        )
        await self._emit(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item_id,
                "content_index": 0,
                "transcript": transcript,
                "usage": {
                    "type": "tokens",
                    "input_tokens": 20,
                    "output_tokens": max(1, len(transcript) // 4),
                    "total_tokens": 20 + max(1, len(transcript) // 4),
                    "input_token_details": {"text_tokens": 0, "audio_tokens": 20},
                },
            }
        )

    async def _handle_input_audio_buffer_commit(self, event: dict[str, Any]) -> None:
        buffered = self.input_ms - self._buffer_start_ms
        if buffered < 100:
            raise _ClientError(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"100ms of audio, but buffer only has {float(buffered):.2f}ms of audio.",
            )
        item_id = self._speech_item_id or _new_id("item")
        self._speaking = False
        self._speech_item_id = None
        await self._commit(item_id)

    async def _handle_input_audio_buffer_clear(self, event: dict[str, Any]) -> None:
        self._buffer_start_ms = self.input_ms
        self._speaking = False
        self._speech_item_id = None
        await self._emit({"type": "input_audio_buffer.cleared"})
