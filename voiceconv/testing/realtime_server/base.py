"""The core of one stand-in connection: state, lifecycle, sending, receiving, ``session.update``.

:class:`SessionBase` is the bottom of :class:`~voiceconv.testing.realtime_server.StandInSession`:
conversation items, responses, then input audio and VAD are layered on it, one module each.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

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

if TYPE_CHECKING:
    from voiceconv.testing.realtime_server.server import RealtimeStandIn

from voiceconv.testing.realtime_server.items import Item, ResponseRun

__all__ = ["SESSION_EXPIRED_MESSAGE", "SessionBase"]

logger = logging.getLogger("voiceconv.testing.realtime_server")


SESSION_EXPIRED_MESSAGE = "Your session hit the maximum duration of 60 minutes."
VAD_WINDOW_MS = 20


class SessionBase:
    """State, lifecycle, the wire and ``session.update`` of one connection."""

    def __init__(self, standin: RealtimeStandIn, ws: ServerConnection, *, model: str) -> None:
        self.standin = standin
        self.ws = ws
        self.model = model
        self.config: dict[str, Any] = default_session_config(model)
        #: A SIP call's sideband (``?call_id=``): the service plays the audio itself, so no
        #: audio crosses this socket in either direction (``voiceconv.testing.realtime_server
        #: .calls``).
        self.call_id: str | None = None
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
        self.items: dict[str, Item] = {}
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
        self.active: ResponseRun | None = None
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
            # An append without "audio" is recorded as sent (None); valid ones carry a str.
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
        self, run: ResponseRun, output_index: int, previous: str | None, data: dict[str, Any]
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
        self, run: ResponseRun, output_index: int, previous: str | None, data: dict[str, Any]
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
