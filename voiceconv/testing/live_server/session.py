"""One GPT-Live stand-in session: ``session.start``, audio both ways, transcripts, delegation.

The model it plays, in the terms of ``protocols.md`` D2:

- The session timeline (every ``*_ms`` field) is input audio received: 8 bytes of μ-law = 1 ms.
- The caller's speech is found by energy (20 ms windows over ``vad_rms_threshold``); it ends
  after ``silence_ms`` of quiet. Its first word arrives as a ``session.input_transcript.delta``
  ``transcript_delay_ms`` into the speech (streaming recognition), the other words when it
  ends, each fragment timed on the timeline; then the next scripted answer starts.
- **Pacing** (implementers report real time): output audio is streamed in ``chunk_ms`` chunks
  at the pace of the timeline, at most ``lead_ms`` ahead of it (network and jitter lead), with
  one ``session.output_transcript.delta`` per word. So what the phone still buffers is at most
  ``lead_ms``; when the caller's first word arrives it is about ``lead_ms -
  transcript_delay_ms``, the audio the client's barge-in clear keeps the caller from hearing.
- **Interruption** (what the types leave open, modelled here): when the caller starts speaking
  while an answer is still being spoken on the timeline, the model stops that answer at once;
  the audio it had already sent stays sent (nothing is taken back, no event says how much was
  heard). The client's part is to clear what the phone still buffers. ``interruptions``
  records each one (``sent_ms``: audio of the answer streamed by then).
- Usage: ``session.usage.updated`` after each answer, whole seconds of timeline.
- Delegation, fixtures and the scripted faults: :mod:`~voiceconv.testing.live_server.speech`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import TYPE_CHECKING, Any

from voiceconv.testing.audio import rms
from voiceconv.testing.live_server.protocol import (
    validate_live_client_event,
    validate_live_server_event,
)
from voiceconv.testing.live_server.speech import LiveSpeech

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

    from voiceconv.testing.live_server.server import GPTLiveStandIn

__all__ = ["LiveStandInSession"]

logger = logging.getLogger("voiceconv.testing.live_server")

FRAME = 160  # 20 ms of μ-law


#: Client events that add context, refused while a fixture plays (and that can answer a client
#: delegation with their ``delegation_id``).
CONTEXT_EVENTS = (
    "session.commentary.append", "session.thinking.append", "session.instructions.append")


class LiveStandInSession(LiveSpeech):
    """The server side of one GPT-Live connection (inspect it in tests)."""

    def __init__(self, standin: GPTLiveStandIn, ws: ServerConnection) -> None:
        self.standin = standin
        self.ws = ws
        self.config: dict[str, Any] | None = None
        self.session_id = f"sess_{id(self):x}"
        #: Every client event received (audio appends without their payload).
        self.received: list[dict[str, Any]] = []
        #: Every server event sent (audio deltas without their payload).
        self.sent: list[dict[str, Any]] = []
        #: Caller audio as received, concatenated (μ-law).
        self.input_audio = bytearray()
        #: Assistant audio as streamed, concatenated (μ-law).
        self.output_audio = bytearray()
        self.protocol_violations: list[str] = []
        #: (call_id, output) of each function call the client answered.
        self.tool_outputs: list[tuple[str, str]] = []
        #: Each interruption: {"at_ms": timeline, "sent_ms": audio of the answer streamed}.
        self.interruptions: list[dict[str, int]] = []
        self.commentary: list[str] = []
        self.closed = asyncio.Event()
        self._in_speech = False
        self._speech_start_ms = 0
        self._quiet_ms = 0
        self._seq = 0
        self._first_word_sent = False
        self._caller_words: list[str] = []
        self._init_speech()

    # ---- helpers ----------------------------------------------------------------------

    @property
    def now_ms(self) -> int:
        return len(self.input_audio) // 8

    def _id(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}_{self._seq:04d}"

    async def send(self, event: dict[str, Any]) -> None:
        if self.standin.strict:
            for problem in validate_live_server_event(event):
                self.protocol_violations.append(f"server: {problem}")
        logged = dict(event)
        if event.get("type") == "session.output_audio.delta":
            logged["delta"] = f"<{len(base64.b64decode(event['delta']))} bytes>"
        self.sent.append(logged)
        await self.ws.send(json.dumps(event))

    async def error(self, code: str, message: str, param: str | None = None,
                    client_event_id: str | None = None) -> None:
        error: dict[str, Any] = {"type": "invalid_request_error", "code": code, "message": message}
        if param:
            error["param"] = param
        if client_event_id:
            error["client_event_id"] = client_event_id
        await self.send({"type": "error", "event_id": self._id("event"), "error": error})

    def resource(self) -> dict[str, Any]:
        cfg = dict(self.config or {})
        out: dict[str, Any] = {
            "id": self.session_id,
            "expires_at": 7200,
            "model": cfg.get("model", "gpt-live-1"),
            "status": "active",
        }
        for key in ("audio", "delegation", "instructions"):
            if cfg.get(key) is not None:
                out[key] = cfg[key]
        return out

    # ---- the connection ---------------------------------------------------------------

    async def run(self) -> None:
        try:
            async for raw in self.ws:
                try:
                    event = json.loads(raw)
                except ValueError:
                    self.protocol_violations.append("client: a frame that is not JSON")
                    await self.error("invalid_json", "The message is not valid JSON.")
                    continue
                if not await self.receive(event):
                    break
        except Exception as exc:  # a dropped socket ends the session
            logger.debug("live stand-in session ended: %s", exc)
        finally:
            await self.stop_speaking()
            self.closed.set()

    async def receive(self, event: Any) -> bool:
        """One client event; False ends the connection."""
        etype = event.get("type") if isinstance(event, dict) else None
        logged = dict(event) if isinstance(event, dict) else {"type": None}
        if etype == "session.input_audio.append":
            logged.pop("audio", None)
        else:
            self.received.append(logged)
        problems = validate_live_client_event(event) if self.standin.strict else []
        if problems:
            self.protocol_violations.extend(f"client: {p}" for p in problems)
            await self.error("invalid_request", "; ".join(problems))
            return True
        if self.config is None:
            if etype != "session.start":
                self.protocol_violations.append(f"client: {etype} before session.start")
                await self.error("session_not_started", "Send session.start first.")
                return True
            return await self.start(event["session"])
        if etype == "session.start":
            self.protocol_violations.append("client: a second session.start")
            await self.error("session_already_started", "The session has already started.")
        elif etype == "session.input_audio.append":
            await self.audio_in(base64.b64decode(event["audio"]))
        elif etype in CONTEXT_EVENTS and self.fixture_active is not None:
            await self.error("fixture_active", f"{etype} is rejected while an audio fixture "
                             "is active.", None, event.get("event_id"))
        elif etype == "session.output_audio.fixture.play":
            await self.play_fixture(event)
        elif etype in CONTEXT_EVENTS and event.get("delegation_id") is not None:
            self.client_replied(str(event["delegation_id"]), etype, str(event["content"]))
        elif etype == "session.commentary.append":
            self.commentary.append(str(event["content"]))
            self.speak(self.standin.next_answer())
        elif etype == "response.item.create":
            item = event["item"]
            if item.get("type") == "function_call_output":
                self.tool_outputs.append((str(item["call_id"]), str(item["output"])))
                if item["call_id"] == self._pending_tool:
                    self._tool_answered = True
        elif etype == "response.create":
            if self._pending_tool is not None and self._tool_answered:
                self._pending_tool = None
                self.speak(self.standin.next_answer())
        elif etype == "session.close":
            await self.send({
                "type": "session.closed", "event_id": self._id("event"),
                "reason": "close_requested", "session": self.resource(), "usage": self.usage(),
            })
            await self.ws.close()
            return False
        return True

    async def start(self, config: dict[str, Any]) -> bool:
        fault = self.standin.start_error
        if fault is not None:
            await self.error(fault, f"Stand-in refused session.start: {fault}")
            await self.ws.close()
            return False
        self.config = config
        await self.send({
            "type": "session.started", "event_id": self._id("event"), "session": self.resource()
        })
        return True

    def usage(self) -> dict[str, Any]:
        return {"seconds": float(self.now_ms // 1000)}

    # ---- caller audio -----------------------------------------------------------------

    async def audio_in(self, audio: bytes) -> None:
        start = len(self.input_audio)
        self.input_audio.extend(audio)
        self._timeline.set()
        if self.fixture_active is not None:
            # Muted while a fixture plays: the input is dropped, never replayed.
            self._in_speech = False
            self._quiet_ms = 0
            return
        threshold = self.standin.vad_rms_threshold
        delay = self.standin.transcript_delay_ms
        for offset in range(0, len(audio), FRAME):
            frame = audio[offset : offset + FRAME]
            at_ms = (start + offset) // 8
            loud = rms(frame) > threshold
            if loud and not self._in_speech:
                self._in_speech = True
                self._speech_start_ms = at_ms
                self._first_word_sent = False
                self._caller_words = self.standin.next_caller_transcript().split()
                await self.interrupt(at_ms)
            elif self._in_speech:
                if not self._first_word_sent and at_ms - self._speech_start_ms >= delay:
                    self._first_word_sent = True
                    first = self._caller_words[:1]
                    await self.fragments("session.input_transcript.delta", first,
                                         self._speech_start_ms, at_ms, leading_space=False)
                self._quiet_ms = 0 if loud else self._quiet_ms + len(frame) // 8
                if self._quiet_ms >= self.standin.silence_ms:
                    self._in_speech = False
                    self._quiet_ms = 0
                    await self.caller_turn(self._speech_start_ms, at_ms - self.standin.silence_ms)

    async def caller_turn(self, start_ms: int, end_ms: int) -> None:
        words = self._caller_words
        start = start_ms
        if self._first_word_sent:
            words = words[1:]
            start = min(start_ms + self.standin.transcript_delay_ms, end_ms)
        end_ms = max(end_ms, start)
        await self.fragments("session.input_transcript.delta", words, start, end_ms,
                             leading_space=self._first_word_sent)
        self.speak(self.standin.next_answer())

    async def fragments(
        self, etype: str, words: list[str], start: int, end: int, *, leading_space: bool = False
    ) -> None:
        n = max(1, len(words))
        span = max(0, end - start)
        for i, word in enumerate(words):
            await self.send({
                "type": etype, "event_id": self._id("event"),
                "delta": (" " if i or leading_space else "") + word,
                "start_ms": start + span * i // n, "end_ms": start + span * (i + 1) // n,
            })
