"""One Realtime connection of the stand-in: its state, recordings, test hooks and faults."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import json
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from voiceconv.testing.audio import BYTES_PER_MS, pcm16_rms, rms, speech_like, ulaw_decode
from voiceconv.testing.realtime_server.config import (
    REASONING_MODEL_PREFIXES,
    _bytes_per_ms,
    _merge_session,
    _new_id,
    default_session_config,
)
from voiceconv.testing.realtime_server.protocol import (
    _ClientError,
    _describe_problem,
    _extra_paths,
    _tables,
    _validate,
    validate_client_event,
    validate_server_event,
)
from voiceconv.testing.realtime_server.script import ScriptedFunctionCall, ScriptedResponse

if TYPE_CHECKING:
    from voiceconv.testing.realtime_server.server import RealtimeStandIn

__all__ = ["SESSION_EXPIRED_MESSAGE", "StandInSession"]

logger = logging.getLogger("voiceconv.testing.realtime_server")

SESSION_EXPIRED_MESSAGE = "Your session hit the maximum duration of 60 minutes."
VAD_WINDOW_MS = 20


@dataclass
class _Item:
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
class _MessageStream:
    """An assistant message being streamed: its item, ids and where its deltas are."""

    item: _Item
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
class _ResponseRun:
    id: str
    script: ScriptedResponse
    request: dict[str, Any]
    task: asyncio.Task[None] | None = None
    cancel_reason: str | None = None
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    generating: bool = True
    audio_ms_generated: int = 0


class StandInSession:
    """One client connection: state, recordings, test hooks and fault injection.

    Recordings: ``received`` (parsed client events except appends), ``appends``
    (``(monotonic time, base64 as received)``), ``input_audio`` (decoded bytes),
    ``sent`` (every server event, in wire order), ``sent_deltas``
    (``(monotonic time at send, item_id, base64)``), ``truncates``
    (``(item_id, audio_end_ms, ok)``), ``response_requests`` (the ``response`` objects of
    client ``response.create`` events), ``errors`` (error events sent) and
    ``protocol_violations`` (schema problems in either direction when strict).
    """

    def __init__(self, standin: RealtimeStandIn, ws: ServerConnection, *, model: str) -> None:
        self.standin = standin
        self.ws = ws
        self.model = model
        self.config: dict[str, Any] = default_session_config(model)
        self.received: list[dict[str, Any]] = []
        self.appends: list[tuple[float, str]] = []
        self.input_audio = bytearray()
        self.sent: list[dict[str, Any]] = []
        self.sent_deltas: list[tuple[float, str, str]] = []
        self.truncates: list[tuple[str, int, bool]] = []
        self.response_requests: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.protocol_violations: list[str] = []
        self.closed = asyncio.Event()
        self.closed_at: float | None = None
        self.close_code: int | None = None
        self.opened_at = time.monotonic()
        self.items: dict[str, _Item] = {}
        self.item_order: list[str] = []
        self.audio_sent_once = False
        # input clock and VAD
        self._clock_ms = 0  # whole VAD windows seen, in the format in force at the time
        self._vad_pending = bytearray()
        self._speaking = False
        self._speech_item_id: str | None = None
        self._speech_start_ms = 0
        self._last_voiced_ms = 0
        self._buffer_start_ms = 0
        self._idle_deadline_ms: int | None = None
        # responses
        self.active: _ResponseRun | None = None
        self._response_seq = 0
        # plumbing
        self._outbox: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue()
        self._unstalled = asyncio.Event()
        self._unstalled.set()
        self._received_signal = asyncio.Event()
        self._consumed: set[int] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        # faults
        #: True once the stand-in dropped the connection (``drop()``, ``drop_after()``).
        self.dropped = False
        self._dropping = False
        self._drop_when: Callable[[dict[str, Any]], bool] | None = None
        self._drop_code = 1011

    # ---- properties ------------------------------------------------------------------

    @property
    def input_ms(self) -> int:
        """The input clock: ms of audio appended so far, in whole 20 ms VAD windows."""
        return self._clock_ms

    @property
    def _input_bytes_per_ms(self) -> int:
        return _bytes_per_ms(self.config["audio"]["input"].get("format"))

    @property
    def turn_detection(self) -> dict[str, Any] | None:
        """The effective ``audio.input.turn_detection`` (``None`` = no VAD)."""
        value = self.config["audio"]["input"].get("turn_detection")
        return value if isinstance(value, dict) else None

    def sent_types(self) -> list[str]:
        """Types of all events sent so far, in wire order."""
        return [event["type"] for event in self.sent]

    # ---- lifecycle -------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until it closes."""
        writer = asyncio.create_task(self._writer())
        lifetime = None
        if self.standin.session_lifetime_s is not None:
            lifetime = asyncio.create_task(self._expire(self.standin.session_lifetime_s))
        try:
            await self._emit({"type": "session.created", "session": copy.deepcopy(self.config)})
            async for message in self.ws:
                await self._on_message(message)
        except ConnectionClosed:
            pass
        finally:
            self.closed_at = time.monotonic()
            self.close_code = self.ws.close_code
            tasks = [writer, *self._tasks]
            if lifetime is not None:
                tasks.append(lifetime)
            if self.active is not None and self.active.task is not None:
                tasks.append(self.active.task)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.closed.set()

    async def _expire(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.expire()

    async def expire(self) -> None:
        """Hit the 60-minute limit now: ``error`` ``session_expired``, then close 1001."""
        await self.send_error("session_expired", SESSION_EXPIRED_MESSAGE, attribute=False)
        await self._drain_outbox()
        await self.close(code=1001, reason=SESSION_EXPIRED_MESSAGE)

    def drop_after(self, event_type: str, *, count: int = 1, code: int = 1011) -> None:
        """Drop the connection right after the ``count``-th next ``event_type`` goes out.

        Nothing queued after that event is sent; the socket closes with ``code`` (1011, as a
        crash of the service). E.g. ``"input_audio_buffer.committed"`` drops between the
        caller's question and the answer, ``"response.done"`` once a tool call was asked for
        or a long answer was generated (while the caller still hears it).
        """
        remaining = [count]

        def matches(event: dict[str, Any]) -> bool:
            if event["type"] != event_type:
                return False
            remaining[0] -= 1
            return remaining[0] <= 0

        self._drop_when = matches
        self._drop_code = code

    async def drop(self, code: int = 1011) -> None:
        """Drop the connection now: nothing more is sent; close with ``code``."""
        self._dropping = True
        self.dropped = True
        await self.close(code=code, reason="stand-in: connection dropped")

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---- sending ---------------------------------------------------------------------

    async def _emit(self, event: dict[str, Any]) -> dict[str, Any]:
        event.setdefault("event_id", _new_id("event"))
        if self.standin.strict:
            for problem in validate_server_event(event):
                self.protocol_violations.append(f"server: {problem}")
        self.sent.append(event)
        if event["type"] == "error":
            self.errors.append(event)
        self._outbox.put_nowait((json.dumps(event), event))
        await asyncio.sleep(0)
        return event

    async def _writer(self) -> None:
        while True:
            entry = await self._outbox.get()
            if entry is None:
                return
            await self._unstalled.wait()
            text, event = entry
            if self._dropping:
                self._outbox.task_done()
                continue
            try:
                await self.ws.send(text)
            except ConnectionClosed:
                return
            finally:
                self._outbox.task_done()
            self._on_sent(event, time.monotonic())
            if self._drop_when is not None and self._drop_when(event):
                self._drop_when = None
                self._dropping = True
                self._spawn(self.drop(self._drop_code))

    def _on_sent(self, event: dict[str, Any], at: float) -> None:
        """An event went out on the wire at ``at`` (monotonic): record what tests match on."""
        if event["type"] == "response.output_audio.delta":
            self.sent_deltas.append((at, event["item_id"], event["delta"]))

    async def _drain_outbox(self) -> None:
        await self._outbox.join()

    async def send_event(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """Send an arbitrary server event (``event_id`` is added when missing)."""
        return await self._emit(dict(event))

    async def send_error(
        self,
        code: str | None,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        param: str | None = None,
        event_id: str | None = None,
        attribute: bool = True,
    ) -> dict[str, Any]:
        """Send an ``error`` event."""
        return await self._emit(
            {
                "type": "error",
                "error": {
                    "type": error_type,
                    "code": code,
                    "message": message,
                    "param": param,
                    "event_id": event_id if attribute else None,
                },
            }
        )

    async def close(self, code: int = 1011, reason: str = "") -> None:
        """Close the socket from the server side (e.g. 1011 to simulate a crash)."""
        await self.ws.close(code, reason)

    def stall(self) -> None:
        """Stop sending anything (queued and new events wait until ``resume()``)."""
        self._unstalled.clear()

    def resume(self) -> None:
        """Undo ``stall()``; queued events go out in order."""
        self._unstalled.set()

    # ---- receiving -------------------------------------------------------------------

    async def _on_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            self.protocol_violations.append("client: binary frame")
            await self.send_error(
                "invalid_json",
                "Binary frames are not supported; send JSON text frames.",
                attribute=False,
            )
            return
        try:
            event = json.loads(message)
        except ValueError:
            self.protocol_violations.append("client: malformed JSON")
            await self.send_error(
                "invalid_json",
                "We could not parse the JSON body of your request. (HINT: This likely means "
                "you aren't using your HTTP library correctly.)",
                attribute=False,
            )
            return
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            self.protocol_violations.append("client: event without a string 'type'")
            await self.send_error(
                "missing_required_parameter",
                "Missing required parameter: 'type'.",
                param="type",
                attribute=False,
            )
            return
        kind = event["type"]
        client_event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        if kind == "input_audio_buffer.append":
            self.appends.append((time.monotonic(), event.get("audio")))  # type: ignore[arg-type]
        else:
            self.received.append(event)
            self._received_signal.set()
        handler = getattr(self, "_handle_" + kind.replace(".", "_"), None)
        _, client_models = _tables()
        if handler is None or kind not in client_models:
            self.protocol_violations.append(f"client: unknown event type {kind!r}")
            await self.send_error(
                "invalid_value",
                f"Invalid value: '{kind}'. Supported values are: "
                + ", ".join(f"'{name}'" for name in sorted(client_models))
                + ".",
                param="type",
                event_id=client_event_id,
            )
            return
        if kind not in ("input_audio_buffer.append", "session.update"):
            problems = validate_client_event(event)
            if problems:
                self.protocol_violations.extend(f"client: {p}" for p in problems)
                code, param, text = _describe_problem(problems[0])
                await self.send_error(code, text, param=param, event_id=client_event_id)
                return
        try:
            await handler(event)
        except _ClientError as exc:
            await self.send_error(
                exc.code,
                exc.message,
                error_type=exc.error_type,
                param=exc.param,
                event_id=client_event_id,
                attribute=exc.attribute,
            )
        except Exception:  # a stand-in bug must not look like a protocol answer
            logger.exception("stand-in: failed handling %s", kind)
            self.protocol_violations.append(f"stand-in: internal error handling {kind}")
            await self.send_error(
                "server_error",
                "The stand-in failed to handle the event.",
                error_type="server_error",
                event_id=client_event_id,
            )

    async def expect_event(self, type: str, timeout: float = 2.0) -> dict[str, Any]:
        """The next not-yet-consumed received client event of ``type`` (waits up to ``timeout``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for index, event in enumerate(self.received):
                if index not in self._consumed and event.get("type") == type:
                    self._consumed.add(index)
                    return event
            remaining = deadline - loop.time()
            if remaining <= 0:
                seen = [event.get("type") for event in self.received]
                raise TimeoutError(f"no client event {type!r} within {timeout}s; received {seen}")
            self._received_signal.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._received_signal.wait(), remaining)

    # ---- session.update --------------------------------------------------------------

    async def _item_added(
        self, run: _ResponseRun, output_index: int, previous: str | None, data: dict[str, Any]
    ) -> None:
        """``response.output_item.added`` then ``conversation.item.added`` for a new item."""
        await self._emit(
            {
                "type": "response.output_item.added",
                "response_id": run.id,
                "output_index": output_index,
                "item": copy.deepcopy(data),
            }
        )
        await self._emit(
            {
                "type": "conversation.item.added",
                "previous_item_id": previous,
                "item": copy.deepcopy(data),
            }
        )

    async def _item_done(
        self, run: _ResponseRun, output_index: int, previous: str | None, data: dict[str, Any]
    ) -> None:
        """``response.output_item.done`` then ``conversation.item.done`` for a finished item."""
        await self._emit(
            {
                "type": "response.output_item.done",
                "response_id": run.id,
                "output_index": output_index,
                "item": copy.deepcopy(data),
            }
        )
        await self._emit(
            {
                "type": "conversation.item.done",
                "previous_item_id": previous,
                "item": copy.deepcopy(data),
            }
        )

    async def _handle_session_update(self, event: dict[str, Any]) -> None:
        update = event.get("session")
        if not isinstance(update, dict):
            self.protocol_violations.append("client: session.update without a session object")
            raise _ClientError(
                "missing_required_parameter",
                "Missing required parameter: 'session'.",
                param="session",
            )
        if "type" not in update:
            self.protocol_violations.append("client: session.update without session.type")
            raise _ClientError(
                "missing_required_parameter",
                "Missing required parameter: 'session.type'.",
                param="session.type",
            )
        if update["type"] != "realtime":
            self.protocol_violations.append(f"client: session.type {update['type']!r}")
            raise _ClientError(
                "invalid_value",
                f"Invalid value: '{update['type']}'. The stand-in supports 'realtime' sessions.",
                param="session.type",
            )
        _, client_models = _tables()
        parsed, problems = _validate(event, client_models, "client")
        if problems:
            self.protocol_violations.extend(f"client: {p}" for p in problems)
            raise _ClientError("invalid_value", f"Invalid session.update: {problems[0]}")
        unknown = _extra_paths(parsed, "")
        if not self.model.startswith(REASONING_MODEL_PREFIXES):
            unknown += [
                f"session.{key}" for key in ("reasoning", "parallel_tool_calls") if key in update
            ]
        if unknown:
            self.protocol_violations.append(f"client: unknown parameter {unknown[0]!r}")
            raise _ClientError(
                "unknown_parameter",
                f"Unknown parameter: '{unknown[0]}'.",
                param=unknown[0],
            )
        if "model" in update and update["model"] != self.model:
            raise _ClientError(
                "invalid_value",
                "The session model cannot be changed once the session exists.",
                param="session.model",
            )
        voice = (update.get("audio") or {}).get("output", {}) or {}
        if (
            "voice" in voice
            and self.audio_sent_once
            and (
                voice["voice"] != self.config["audio"]["output"]["voice"]
                or self.standin.reject_voice_resend
            )
        ):
            raise _ClientError(
                "cannot_update_voice",
                "Cannot update a conversation's voice if assistant audio is present.",
                attribute=False,
            )
        self.config = _merge_session(self.config, update)
        await self._emit({"type": "session.updated", "session": copy.deepcopy(self.config)})

    # ---- input audio and VAD ---------------------------------------------------------

    async def _handle_input_audio_buffer_append(self, event: dict[str, Any]) -> None:
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
        await self._add_item(_Item(id=item_id, type="message", role="user", data=item), previous)
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

    # ---- conversation items ----------------------------------------------------------

    async def _add_item(self, item: _Item, previous: str | None) -> None:
        self.items[item.id] = item
        self.item_order.append(item.id)
        await self._emit(
            {
                "type": "conversation.item.added",
                "previous_item_id": previous,
                "item": copy.deepcopy(item.data),
            }
        )
        await self._emit(
            {
                "type": "conversation.item.done",
                "previous_item_id": previous,
                "item": copy.deepcopy(item.data),
            }
        )

    async def _handle_conversation_item_create(self, event: dict[str, Any]) -> None:
        data = copy.deepcopy(event["item"])
        previous = event.get("previous_item_id")
        if previous not in (None, "root") and previous not in self.items:
            raise _ClientError(
                "invalid_value",
                f"Invalid 'previous_item_id': '{previous}'. No such item in the conversation.",
                param="previous_item_id",
            )
        item_id = data.get("id") or _new_id("item")
        if item_id in self.items:
            raise _ClientError(
                "invalid_value",
                f"Item with id '{item_id}' already exists.",
                param="item.id",
            )
        if data.get("type") == "function_call_output":
            known = {i.call_id for i in self.items.values() if i.type == "function_call"}
            if data.get("call_id") not in known:
                self.protocol_violations.append(
                    f"client: function_call_output for unknown call_id {data.get('call_id')!r}"
                )
        data["id"] = item_id
        data.setdefault("object", "realtime.item")
        data.setdefault("status", "completed")
        if previous is None:
            previous = self.item_order[-1] if self.item_order else None
        elif previous == "root":
            previous = None
        item = _Item(
            id=item_id,
            type=data.get("type", ""),
            role=data.get("role"),
            call_id=data.get("call_id"),
            data=data,
        )
        await self._add_item(item, previous)

    async def _handle_conversation_item_delete(self, event: dict[str, Any]) -> None:
        item_id = event["item_id"]
        if item_id not in self.items:
            raise _ClientError(
                "invalid_value",
                f"Item with item_id not found: {item_id}",
                param="item_id",
            )
        del self.items[item_id]
        self.item_order.remove(item_id)
        await self._emit({"type": "conversation.item.deleted", "item_id": item_id})

    async def _handle_conversation_item_retrieve(self, event: dict[str, Any]) -> None:
        item = self.items.get(event["item_id"])
        if item is None:
            raise _ClientError(
                "invalid_value",
                f"Item with item_id not found: {event['item_id']}",
                param="item_id",
            )
        await self._emit({"type": "conversation.item.retrieved", "item": copy.deepcopy(item.data)})

    async def _handle_conversation_item_truncate(self, event: dict[str, Any]) -> None:
        item_id, end_ms = event["item_id"], int(event["audio_end_ms"])
        item = self.items.get(item_id)
        if item is None or item.role != "assistant" or not item.has_audio:
            self.truncates.append((item_id, end_ms, False))
            if item is None:
                raise _ClientError(
                    "invalid_value",
                    f"Item with item_id not found: {item_id}",
                    param="item_id",
                )
            raise _ClientError(
                "invalid_value",
                "Only model output audio messages can be truncated",
                param="item_id",
            )
        if end_ms > item.audio_ms or end_ms < 0:
            self.truncates.append((item_id, end_ms, False))
            raise _ClientError(
                None,
                f"Audio content of {item.audio_ms}ms is already shorter than {end_ms}ms",
                attribute=False,
            )
        self.truncates.append((item_id, end_ms, True))
        item.audio_bytes = end_ms * item.bytes_per_ms
        item.transcript = ""
        for part in item.data.get("content", []):
            part["transcript"] = ""
        await self._emit(
            {
                "type": "conversation.item.truncated",
                "item_id": item_id,
                "content_index": int(event.get("content_index", 0)),
                "audio_end_ms": end_ms,
            }
        )

    async def _handle_output_audio_buffer_clear(self, event: dict[str, Any]) -> None:
        self.protocol_violations.append("client: output_audio_buffer.clear on a WebSocket")
        raise _ClientError(
            "invalid_value",
            "output_audio_buffer.clear is only supported for WebRTC and SIP.",
        )

    # ---- responses -------------------------------------------------------------------

    async def _handle_response_create(self, event: dict[str, Any]) -> None:
        request = event.get("response") or {}
        self.response_requests.append(request)
        if self.active is not None:
            raise _ClientError(
                "conversation_already_has_active_response",
                f"Conversation already has an active response in progress: {self.active.id}. "
                "Wait until the response is finished before creating a new one.",
            )
        await self.start_response(request)

    async def _handle_response_cancel(self, event: dict[str, Any]) -> None:
        wanted = event.get("response_id")
        if self.active is None or (wanted and wanted != self.active.id):
            raise _ClientError(
                "response_cancel_not_active",
                "Cancellation failed: no active response found",
            )
        await self.cancel_active("client_cancelled")

    async def start_response(
        self, request: Mapping[str, Any] | None = None, *, created_delay_ms: int = 0
    ) -> str:
        """Start the next scripted response (as a VAD commit or ``response.create`` would).

        With ``created_delay_ms`` the response is active at once but ``response.created``
        goes out that much later (real time): a ``response.create`` the client sends
        meanwhile meets a response it has not seen yet.
        """
        if self.active is not None:
            raise RuntimeError(f"response {self.active.id} is still active")
        run = _ResponseRun(_new_id("resp"), self.standin.next_response(), dict(request or {}))
        self.active = run
        self._idle_deadline_ms = None
        if created_delay_ms > 0:
            run.task = asyncio.create_task(self._announce_then_run(run, created_delay_ms))
        else:
            await self._emit(
                {"type": "response.created", "response": self._response_object(run, [])}
            )
            run.task = asyncio.create_task(self._run_response(run))
        return run.id

    async def _announce_then_run(self, run: _ResponseRun, delay_ms: int) -> None:
        await asyncio.sleep(delay_ms / 1000)
        await self._emit({"type": "response.created", "response": self._response_object(run, [])})
        await self._run_response(run)

    async def cancel_active(self, reason: str) -> None:
        """Cancel the active response with ``reason`` and wait for its cancelled tail."""
        run = self.active
        if run is None or run.task is None:
            return
        if run.cancel_reason is None:
            run.cancel_reason = reason
            run.cancelled.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(run.task)

    def _response_object(
        self,
        run: _ResponseRun,
        output: list[dict[str, Any]],
        *,
        status: str = "in_progress",
        details: dict[str, Any] | None = None,
        usage: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        request = run.request
        out_cfg = self.config["audio"]["output"]
        voice = out_cfg["voice"]
        if isinstance(voice, dict):
            # RealtimeResponse types the voice as a string: a custom voice is reported by its
            # id (assumed; the types leave the shape of a custom voice here open).
            voice = voice.get("id")
        return {
            "id": run.id,
            "object": "realtime.response",
            "status": status,
            "status_details": details,
            "output": output,
            "conversation_id": None if request.get("conversation") == "none" else "conv_standin",
            "output_modalities": request.get("output_modalities")
            or self.config["output_modalities"],
            "max_output_tokens": request.get("max_output_tokens")
            or self.config["max_output_tokens"],
            "audio": {"output": {"format": out_cfg["format"], "voice": voice}},
            "usage": usage,
            "metadata": request.get("metadata"),
        }

    async def _pause(self, run: _ResponseRun, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.cancelled.wait(), seconds)

    def _chunk_plan(self, total_ms: int, seed: int) -> list[int]:
        rng = random.Random(seed)
        low, high = self.standin.chunk_ms
        plan: list[int] = []
        remaining = total_ms
        while remaining > 0:
            size = min(remaining, rng.randint(low, high))
            plan.append(size)
            remaining -= size
        return plan

    def _audio_chunk(self, ms: int, seed: int, bpm: int) -> bytes:
        ulaw = speech_like(ms, seed=seed)
        if bpm == 48:  # PCM16 24 kHz: upsample by repetition
            pcm = ulaw_decode(ulaw)
            return b"".join(pcm[i : i + 2] * 3 for i in range(0, len(pcm), 2))
        return ulaw

    async def _run_response(self, run: _ResponseRun) -> None:
        script = run.script
        outputs: list[dict[str, Any]] = []
        self._response_seq += 1
        seq = self._response_seq
        try:
            await self._emit(
                {
                    "type": "rate_limits.updated",
                    "rate_limits": [
                        {
                            "name": "requests",
                            "limit": 5000,
                            "remaining": 4999,
                            "reset_seconds": 0.012,
                        },
                        {
                            "name": "tokens",
                            "limit": 40000,
                            "remaining": 38000,
                            "reset_seconds": 3.0,
                        },
                    ],
                }
            )
            await self._pause(run, script.delay_ms / 1000)
            if script.drop_after_ms == 0:
                await self._drop_from_response()
            if script.fail_with and run.cancel_reason is None:
                await self._finish(
                    run,
                    outputs,
                    "failed",
                    {
                        "type": "failed",
                        "error": {"type": "invalid_request_error", "code": script.fail_with},
                    },
                    0,
                    0,
                )
                return
            messages: list[_MessageStream] = []
            if script.preamble and run.cancel_reason is None:
                messages.append(
                    await self._open_message(
                        run, 0, script.preamble, script.effective_preamble_ms(), seq * 7919
                    )
                )
            audio_ms = script.effective_audio_ms()
            first = messages[0] if messages else None
            if first is not None:
                await self._pump(run, first)
            if run.cancel_reason is None and (script.text or audio_ms):
                answer = await self._open_message(run, len(messages), script.text, audio_ms, seq)
                messages.append(answer)
                if first is not None:
                    # The answer starts before the preamble's tail, as the live service does.
                    await self._pump(run, answer, limit=script.overlap_chunks)
                    outputs.append(await self._close_message(run, first))
                    first = None
                await self._pump(run, answer)
            if first is not None:
                outputs.append(await self._close_message(run, first))
            for message in messages[len(outputs) :]:
                outputs.append(await self._close_message(run, message))
            for call in script.function_calls:
                if run.cancel_reason is not None:
                    break
                outputs.append(await self._stream_call(run, len(outputs), call))
            audio_ms_sent = sum(m.item.audio_bytes // m.bpm for m in messages)
            text_chars = sum(len(m.spoken) for m in messages)
            if run.cancel_reason is not None:
                await self._finish(
                    run,
                    outputs,
                    "cancelled",
                    {"type": "cancelled", "reason": run.cancel_reason},
                    audio_ms_sent,
                    text_chars,
                )
            else:
                await self._finish(run, outputs, "completed", None, audio_ms_sent, text_chars)
        finally:
            run.generating = False
            if self.active is run:
                self.active = None

    async def _drop_from_response(self) -> None:
        """Drop the connection from inside a response; the response never ends."""
        self._spawn(self.drop())
        await asyncio.Event().wait()  # cancelled when the session closes

    async def _open_message(
        self, run: _ResponseRun, output_index: int, text: str, audio_ms: int, seq: int
    ) -> _MessageStream:
        """Add an assistant message item to the response and plan its deltas."""
        text_mode = "audio" not in self._response_object(run, [])["output_modalities"]
        bpm = _bytes_per_ms(self.config["audio"]["output"].get("format"))
        item_id = _new_id("item")
        previous = self.item_order[-1] if self.item_order else None
        data: dict[str, Any] = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        item = _Item(
            id=item_id,
            type="message",
            role="assistant",
            has_audio=not text_mode,
            bytes_per_ms=bpm,
            data=data,
        )
        self.items[item_id] = item
        self.item_order.append(item_id)
        words = text.split(" ")
        pieces = (
            [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)] if text else []
        )
        plan = self._chunk_plan(audio_ms, seed=seq) if not text_mode else [1] * len(pieces)
        message = _MessageStream(
            item=item,
            previous=previous,
            ids={
                "response_id": run.id,
                "item_id": item_id,
                "output_index": output_index,
                "content_index": 0,
            },
            text_mode=text_mode,
            bpm=bpm,
            pieces=pieces,
            plan=plan,
            seq=seq,
        )
        await self._item_added(run, output_index, previous, data)
        part_type = "text" if text_mode else "audio"
        empty_part = {"type": part_type, ("text" if text_mode else "transcript"): ""}
        await self._emit({"type": "response.content_part.added", **message.ids, "part": empty_part})
        return message

    async def _pump(
        self, run: _ResponseRun, message: _MessageStream, limit: int | None = None
    ) -> None:
        """Stream up to ``limit`` more chunks of ``message`` (all that is left by default)."""
        script = run.script
        speed = script.speed_factor or self.standin.speed_factor
        total = sum(message.plan) or 1
        sent = 0
        while message.next_chunk < len(message.plan):
            if run.cancel_reason is not None or (limit is not None and sent >= limit):
                return
            index = message.next_chunk
            chunk_ms = message.plan[index]
            message.next_chunk += 1
            sent += 1
            if not message.text_mode:
                audio = self._audio_chunk(
                    chunk_ms, seed=message.seq * 1_000_003 + index, bpm=message.bpm
                )
                await self._emit(
                    {
                        "type": "response.output_audio.delta",
                        **message.ids,
                        "delta": base64.b64encode(audio).decode("ascii"),
                    }
                )
                self.audio_sent_once = True
                message.item.audio_bytes += len(audio)
                run.audio_ms_generated += chunk_ms
            message.done_ms += chunk_ms
            target = math.ceil(len(message.pieces) * message.done_ms / total)
            if target > message.said:
                delta = "".join(message.pieces[message.said : target])
                message.said = target
                kind = (
                    "response.output_text.delta"
                    if message.text_mode
                    else "response.output_audio_transcript.delta"
                )
                await self._emit({"type": kind, **message.ids, "delta": delta})
            generated = run.audio_ms_generated
            if script.drop_after_ms is not None and generated >= script.drop_after_ms:
                await self._drop_from_response()
            if (
                script.server_cancel_after_ms is not None
                and generated >= script.server_cancel_after_ms
                and run.cancel_reason is None
            ):
                run.cancel_reason = script.server_cancel_reason
                run.cancelled.set()
            await self._pause(run, chunk_ms / 1000 / speed if not message.text_mode else 0)

    async def _close_message(self, run: _ResponseRun, message: _MessageStream) -> dict[str, Any]:
        """The done events of ``message``; its final item as listed in ``response.done``."""
        ids = message.ids
        spoken = message.spoken
        finished = message.next_chunk >= len(message.plan)
        message.item.transcript = spoken
        if message.text_mode:
            await self._emit({"type": "response.output_text.done", **ids, "text": spoken})
            final_part = {"type": "text", "text": spoken}
            content: list[dict[str, str]] = [{"type": "output_text", "text": spoken}]
        else:
            await self._emit({"type": "response.output_audio.done", **ids})
            await self._emit(
                {"type": "response.output_audio_transcript.done", **ids, "transcript": spoken}
            )
            final_part = {"type": "audio", "transcript": spoken}
            content = [{"type": "output_audio", "transcript": spoken}]
        await self._emit({"type": "response.content_part.done", **ids, "part": final_part})
        data = message.item.data
        data.update(status="completed" if finished else "incomplete", content=content)
        await self._item_done(run, ids["output_index"], message.previous, data)
        return copy.deepcopy(data)

    async def _stream_call(
        self,
        run: _ResponseRun,
        output_index: int,
        call: ScriptedFunctionCall,
    ) -> dict[str, Any]:
        item_id = _new_id("item")
        call_id = call.call_id or _new_id("call")
        previous = self.item_order[-1] if self.item_order else None
        data = {
            "id": item_id,
            "object": "realtime.item",
            "type": "function_call",
            "status": "in_progress",
            "name": call.name,
            "call_id": call_id,
            "arguments": "",
        }
        self.items[item_id] = _Item(id=item_id, type="function_call", call_id=call_id, data=data)
        self.item_order.append(item_id)
        await self._item_added(run, output_index, previous, data)
        arguments = call.arguments_json()
        ids = {
            "response_id": run.id,
            "item_id": item_id,
            "output_index": output_index,
            "call_id": call_id,
        }
        step = max(1, math.ceil(len(arguments) / 3))
        for start in range(0, len(arguments), step):
            await self._emit(
                {
                    "type": "response.function_call_arguments.delta",
                    **ids,
                    "delta": arguments[start : start + step],
                }
            )
            await self._pause(run, 0.002)
        cancelled = run.cancel_reason is not None
        await self._emit(
            {
                "type": "response.function_call_arguments.done",
                **ids,
                "name": call.name,
                "arguments": arguments,
            }
        )
        data.update(status="incomplete" if cancelled else "completed", arguments=arguments)
        await self._item_done(run, output_index, previous, data)
        return copy.deepcopy(data)

    async def _finish(
        self,
        run: _ResponseRun,
        outputs: list[dict[str, Any]],
        status: str,
        details: dict[str, Any] | None,
        audio_ms: int,
        text_chars: int,
    ) -> None:
        audio_tokens = audio_ms // 50
        text_tokens = math.ceil(text_chars / 4) + sum(
            math.ceil(len(o.get("arguments", "")) / 4) for o in outputs
        )
        input_audio = max(0, self.input_ms // 100)
        input_text = 150 + 10 * len(self.item_order)
        usage = {
            "total_tokens": input_audio + input_text + audio_tokens + text_tokens,
            "input_tokens": input_audio + input_text,
            "output_tokens": audio_tokens + text_tokens,
            "input_token_details": {
                "text_tokens": input_text,
                "audio_tokens": input_audio,
                "image_tokens": 0,
                "cached_tokens": 0,
                "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0},
            },
            "output_token_details": {"text_tokens": text_tokens, "audio_tokens": audio_tokens},
        }
        self.active = None
        await self._emit(
            {
                "type": "response.done",
                "response": self._response_object(
                    run, outputs, status=status, details=details, usage=usage
                ),
            }
        )
        td = self.turn_detection
        if td and td.get("idle_timeout_ms") and status == "completed":
            self._idle_deadline_ms = self.input_ms + audio_ms + int(td["idle_timeout_ms"])
