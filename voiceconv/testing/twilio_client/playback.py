"""What the app sends back, as Twilio takes it: its checks, then its playback buffer.

A frame Twilio would refuse (binary, not JSON, an unknown event, a wrong ``streamSid``, extra
fields) is recorded as a :class:`~voiceconv.testing.twilio_client.Violation` and ignored, as
Twilio does (warnings 31950/31951). Accepted ``media`` goes into a FIFO played at 8 bytes
per ms of call time; a ``mark`` is queued behind the audio before it and echoed once that
audio has played (at once when nothing is queued); ``clear`` drops the queued audio and
echoes every pending mark at once, in order (``docs/protocols.md`` §T3, §T4).
:class:`Playback` is a part of :class:`~voiceconv.testing.twilio_client.TwilioStreamClient`;
the state lives on the client.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import time
from collections import deque
from typing import Any

from websockets.exceptions import ConnectionClosed

from voiceconv.testing.audio import BYTES_PER_MS
from voiceconv.testing.twilio_client.records import (
    APP_EVENTS,
    FRAME_MS,
    MAX_BUFFER_BYTES,
    Chunk,
    ClearRecord,
    MarkRecord,
    MediaRecord,
)

__all__ = ["Playback"]


class Playback:
    """The app's messages to one stream: checked, then played (the state lives on the client)."""

    realtime: bool
    stream_sid: str
    heard: bytearray
    media_records: list[MediaRecord]
    received_media: list[tuple[float, str]]
    received_marks: list[MarkRecord]
    echoed_marks: list[MarkRecord]
    clears: list[float]
    clear_records: list[ClearRecord]
    _fifo: deque[Chunk | MarkRecord]
    _queued_bytes: int
    _cursor_ms: float
    _run_received: int
    _run_played: int
    _unmarked: list[MediaRecord]
    _media_clock_ms: float
    _outbox: deque[tuple[str, dict[str, Any]]]
    _player_wake: asyncio.Event
    _started: bool
    all_messages: list[dict[str, Any]]

    # The client's (the connection side).
    def _wall_call_ms(self) -> float:
        raise NotImplementedError

    def _queue(self, message: dict[str, Any], *, seq: bool = True) -> None:
        raise NotImplementedError

    async def _flush(self) -> None:
        raise NotImplementedError

    def _notify(self) -> None:
        raise NotImplementedError

    def _violation(self, code: int, reason: str, raw: str | bytes) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ playback state

    @property
    def received_bytes(self) -> int:
        """Total bytes of accepted media received from the app."""
        return sum(r.size for r in self.media_records)

    @property
    def played_ms(self) -> float:
        """Milliseconds of app audio the caller has heard."""
        return len(self.heard) / BYTES_PER_MS

    @property
    def queued_bytes(self) -> int:
        """Bytes of app audio waiting in the playback buffer."""
        return self._queued_bytes

    @property
    def call_time_ms(self) -> float:
        """Call time since ``start``: inbound audio sent (virtual) or wall time (realtime)."""
        if self.realtime:
            return self._wall_call_ms()
        return self._media_clock_ms

    @property
    def pending_marks(self) -> list[str]:
        """Names of marks queued behind unplayed audio."""
        return [item.name for item in self._fifo if isinstance(item, MarkRecord)]

    def played_bytes_by_mark(self) -> dict[str, int]:
        """For each mark name: bytes played of the media received since the previous mark."""
        out: dict[str, int] = {}
        for record in self.media_records:
            if record.next_mark is not None:
                out[record.next_mark] = out.get(record.next_mark, 0) + record.played
        return out

    def mark(self, name: str) -> MarkRecord:
        """The last received mark called ``name``."""
        for record in reversed(self.received_marks):
            if record.name == name:
                return record
        raise KeyError(name)

    # ------------------------------------------------------------------ Twilio's checks

    def _handle(self, raw: str | bytes) -> None:
        """Validate one frame from the app and apply it to the playback model."""
        if isinstance(raw, bytes):
            self._violation(31950, f"binary frame of {len(raw)} bytes", raw)
            return
        try:
            message = json.loads(raw)
        except ValueError:
            self._violation(31951, "not JSON", raw)
            return
        if not isinstance(message, dict):
            self._violation(31951, "not a JSON object", raw)
            return
        event = message.get("event")
        if event not in APP_EVENTS:
            self._violation(31951, f"unknown event {event!r}", raw)
            return
        if not self._started:
            self._violation(31951, f"{event!r} before start (no streamSid yet)", raw)
            return
        if message.get("streamSid") != self.stream_sid:
            sid = message.get("streamSid")
            self._violation(31951, f"{event} with wrong streamSid {sid!r}", raw)
            return
        body_key = APP_EVENTS[event]
        allowed = {"event", "streamSid"} | ({body_key} if body_key else set())
        extra = set(message) - allowed
        if extra:
            self._violation(31951, f"{event} with extra fields {sorted(extra)}", raw)
            return
        if event == "media":
            payload = self._media_payload(message, raw)
            if payload is None:
                return
            self.all_messages.append(message)
            self._on_media(message["media"]["payload"], payload)
        elif event == "mark":
            body = message.get("mark")
            if (
                not isinstance(body, dict)
                or set(body) != {"name"}
                or not isinstance(body["name"], str)
            ):
                self._violation(31951, "mark without a string mark.name (or extra fields)", raw)
                return
            self.all_messages.append(message)
            self._on_mark(body["name"])
        else:
            self.all_messages.append(message)
            self._on_clear()

    def _media_payload(self, message: dict[str, Any], raw: str) -> bytes | None:
        body = message.get("media")
        if (
            not isinstance(body, dict)
            or set(body) != {"payload"}
            or not isinstance(body["payload"], str)
        ):
            self._violation(31951, "media without a string media.payload (or extra fields)", raw)
            return None
        try:
            payload = base64.b64decode(body["payload"], validate=True)
        except (binascii.Error, ValueError):
            self._violation(31951, "media.payload is not base64", raw)
            return None
        return payload

    # ------------------------------------------------------------------ the FIFO

    def _now_call_ms(self) -> float:
        return self._wall_call_ms() if self.realtime else self._media_clock_ms

    def _on_media(self, b64: str, payload: bytes) -> None:
        now = time.monotonic()
        if self.realtime:
            self._advance_to(self._wall_call_ms())
        self.received_media.append((now, b64))
        record = MediaRecord(len(self.media_records), now, b64, len(payload), self._now_call_ms())
        self.media_records.append(record)
        self._unmarked.append(record)
        self._run_received += len(payload)
        if self._queued_bytes + len(payload) > MAX_BUFFER_BYTES:
            record.dropped = len(payload)
            self._violation(31931, "more than 10 minutes of audio buffered; media dropped", b64)
            return
        if not self._fifo:
            self._cursor_ms = max(self._cursor_ms, self._now_call_ms())
        if payload:
            self._fifo.append(Chunk(record, payload))
            self._queued_bytes += len(payload)
        self._player_wake.set()

    def _on_mark(self, name: str) -> None:
        if self.realtime:
            self._advance_to(self._wall_call_ms())
        record = MarkRecord(name, time.monotonic(), self._now_call_ms())
        self.received_marks.append(record)
        for media in self._unmarked:
            media.next_mark = name
        self._unmarked.clear()
        if self._fifo:
            self._fifo.append(record)
            self._player_wake.set()
        else:
            self._echo(record, self._now_call_ms())

    def _on_clear(self) -> None:
        if self.realtime:
            self._advance_to(self._wall_call_ms())
        now_ms = self._now_call_ms()
        dropped = 0
        flushed: list[MarkRecord] = []
        for item in self._fifo:
            if isinstance(item, MarkRecord):
                flushed.append(item)
            else:
                item.record.dropped += item.remaining
                dropped += item.remaining
        self._fifo.clear()
        self._queued_bytes = 0
        self._unmarked.clear()
        for record in flushed:
            record.cleared = True
            self._echo(record, now_ms)
        self.clears.append(time.monotonic())
        self.clear_records.append(
            ClearRecord(
                at=self.clears[-1],
                call_ms=now_ms,
                heard_bytes=len(self.heard),
                dropped_bytes=dropped,
                run_received=self._run_received,
                run_played=self._run_played,
                flushed_marks=[r.name for r in flushed],
            )
        )
        self._run_received = 0
        self._run_played = 0
        self._cursor_ms = max(self._cursor_ms, now_ms)

    def _echo(self, record: MarkRecord, call_ms: float) -> None:
        record.echoed_at = time.monotonic()
        record.echo_call_ms = call_ms
        record.heard_bytes = len(self.heard)
        self.echoed_marks.append(record)
        self._queue({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": record.name}})

    def _advance_to(self, target_ms: float) -> None:
        """Play the FIFO up to call time ``target_ms``, echoing marks as they are reached."""
        if target_ms <= self._cursor_ms:
            return
        while self._fifo:
            head = self._fifo[0]
            if isinstance(head, MarkRecord):
                self._fifo.popleft()
                self._echo(head, self._cursor_ms)
                continue
            budget = int((target_ms - self._cursor_ms) * BYTES_PER_MS + 1e-6)
            if budget <= 0:
                break
            n = min(budget, head.remaining)
            played = head.data[head.offset : head.offset + n]
            self.heard += played
            head.offset += n
            head.record.played += n
            self._queued_bytes -= n
            self._run_played += n
            self._cursor_ms += n / BYTES_PER_MS
            if head.remaining == 0:
                self._fifo.popleft()
        if not self._fifo:
            self._cursor_ms = target_ms
        self._notify()

    def _next_boundary_ms(self) -> float | None:
        """Call time at which the audio before the first queued mark will have played."""
        ahead = 0
        for item in self._fifo:
            if isinstance(item, MarkRecord):
                return self._cursor_ms + ahead / BYTES_PER_MS
            ahead += item.remaining
        return None

    async def _play_loop(self) -> None:
        """Realtime playback: advance with wall time, waking exactly at mark boundaries."""
        try:
            while True:
                self._player_wake.clear()
                self._advance_to(self._wall_call_ms())
                if self._outbox:
                    await self._flush()
                boundary = self._next_boundary_ms()
                if boundary is not None:
                    delay = max(0.0, (boundary - self._wall_call_ms()) / 1000.0)
                    delay = min(delay, FRAME_MS / 1000.0)
                elif self._fifo:
                    delay = FRAME_MS / 1000.0
                else:
                    delay = None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._player_wake.wait()
        except ConnectionClosed:
            pass
