"""Responses in the stand-in: scripted, streamed faster than real time, cancelled, with tools.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import math
import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from voiceconv.testing.audio import speech_like, ulaw_decode
from voiceconv.testing.realtime_server.config import (
    _bytes_per_ms,
    _new_id,
)
from voiceconv.testing.realtime_server.protocol import (
    _ClientError,
)
from voiceconv.testing.realtime_server.script import ScriptedFunctionCall

if TYPE_CHECKING:
    pass

from voiceconv.testing.realtime_server.conversation import ConversationItems
from voiceconv.testing.realtime_server.items import Item, MessageStream, ResponseRun

__all__ = ["Responses"]


class Responses(ConversationItems):
    """``response.create`` / ``response.cancel`` and the responses the script plays."""

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
        run = ResponseRun(_new_id("resp"), self.standin.next_response(), dict(request or {}))
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

    async def _announce_then_run(self, run: ResponseRun, delay_ms: int) -> None:
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
        run: ResponseRun,
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

    async def _pause(self, run: ResponseRun, seconds: float) -> None:
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

    async def _run_response(self, run: ResponseRun) -> None:
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
            messages: list[MessageStream] = []
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
        self, run: ResponseRun, output_index: int, text: str, audio_ms: int, seq: int
    ) -> MessageStream:
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
        item = Item(
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
        message = MessageStream(
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
        self, run: ResponseRun, message: MessageStream, limit: int | None = None
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
            if self.call_id is not None and not message.text_mode:
                # A SIP call: the service plays the audio to the caller, not on this socket.
                if not run.server_playing:
                    run.server_playing = True
                    await self._emit({"type": "output_audio_buffer.started",
                                      "response_id": run.id})
                run.audio_ms_generated += chunk_ms
            elif not message.text_mode:
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

    async def _close_message(self, run: ResponseRun, message: MessageStream) -> dict[str, Any]:
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
        run: ResponseRun,
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
        self.items[item_id] = Item(id=item_id, type="function_call", call_id=call_id, data=data)
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
        run: ResponseRun,
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
        if run.server_playing:
            kind = "cleared" if status == "cancelled" else "stopped"
            await self._emit({"type": f"output_audio_buffer.{kind}", "response_id": run.id})
        td = self.turn_detection
        if td and td.get("idle_timeout_ms") and status == "completed":
            self._idle_deadline_ms = self.input_ms + audio_ms + int(td["idle_timeout_ms"])
