"""What the GPT-Live stand-in's model says: scripted answers, delegations, fixtures, faults.

A mixin of :class:`~voiceconv.testing.live_server.session.LiveStandInSession` (the connection,
the events in and the caller's audio are there). Output audio is paced on the session timeline
(input audio received), at most ``lead_ms`` ahead of it, in ``chunk_ms`` chunks; an answer's
transcript goes out as timed fragments as its audio is streamed.

Audio fixtures (``session.output_audio.fixture.play``), as the types describe them: the whole
payload is checked first (base64 of mono PCM16 at 24 kHz, at most 30 s; one fixture at a
time), then the model's speech stops, caller input is muted (dropped, never replayed),
``session.output_audio.fixture.playing`` acknowledges, the clip streams in the session's
format (μ-law 8 kHz: every third sample, encoded) with the same pacing, and
``session.output_audio.fixture.played`` follows once it has all been sent; input is unmuted.
Commentary, thinking and instructions are refused (``error``) while a fixture is active.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
from array import array
from typing import TYPE_CHECKING, Any

from voiceconv.testing.audio import ulaw_encode
from voiceconv.testing.live_server.script import ScriptedFragment, ScriptedLiveAnswer

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

    from voiceconv.testing.live_server.server import GPTLiveStandIn

__all__ = ["FIXTURE_MAX_BYTES", "LiveSpeech", "fixture_to_ulaw"]

FRAME = 160  # 20 ms of μ-law
#: 30 s of mono PCM16 at 24 kHz.
FIXTURE_MAX_BYTES = 30 * 24000 * 2


def fixture_to_ulaw(pcm24k: bytes) -> bytes:
    """A fixture's PCM16 24 kHz audio as the session's μ-law at 8 kHz."""
    samples = array("h")
    samples.frombytes(pcm24k[: len(pcm24k) // 2 * 2])
    return ulaw_encode(samples[::3].tobytes())


class LiveSpeech:
    """The model's side of a stand-in session (mixed into ``LiveStandInSession``)."""

    standin: GPTLiveStandIn
    ws: ServerConnection
    output_audio: bytearray
    interruptions: list[dict[str, int]]

    def _init_speech(self) -> None:
        self._speaking: asyncio.Task[None] | None = None
        self._answers = 0
        self._answer_sent = 0
        #: Timeline ms until which the current answer is being spoken.
        self._speaking_until = 0
        self._pending_tool: str | None = None
        self._tool_answered = False
        #: The client delegation waiting for the client's reply.
        self._pending_client: str | None = None
        #: The fixture being played (its play event's ``event_id``, or "" without one).
        self.fixture_active: str | None = None
        #: Each fixture accepted: {"event_id": ..., "pcm_bytes": ..., "sent": μ-law bytes}.
        self.fixtures: list[dict[str, Any]] = []
        #: Replies to client delegations: (delegation_id, event type, content).
        self.delegation_replies: list[tuple[str, str, str]] = []
        self._timeline = asyncio.Event()

    # provided by the session
    @property
    def now_ms(self) -> int:
        raise NotImplementedError

    def _id(self, prefix: str) -> str:
        raise NotImplementedError

    async def send(self, event: dict[str, Any]) -> None:
        raise NotImplementedError

    async def error(self, code: str, message: str, param: str | None = None,
                    client_event_id: str | None = None) -> None:
        raise NotImplementedError

    def usage(self) -> dict[str, Any]:
        raise NotImplementedError

    def resource(self) -> dict[str, Any]:
        raise NotImplementedError

    # ---- answers ----------------------------------------------------------------------

    def speak(self, answer: ScriptedLiveAnswer) -> None:
        """Start saying ``answer`` (whatever was being said stops)."""
        if self._speaking is not None and not self._speaking.done():
            self._speaking.cancel()
        self._speaking = asyncio.ensure_future(self._answer(answer))

    async def stop_speaking(self) -> None:
        task = self._speaking
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    async def _answer(self, answer: ScriptedLiveAnswer) -> None:
        self._answers += 1
        if answer.delegate is not None and self._pending_tool is None:
            await self.delegate(answer)
            return
        if answer.delegate_to_client and self._pending_client is None:
            await self.delegate_to_client()
            return
        if answer.fail_with is not None:
            await self.error(answer.fail_with, f"Stand-in fault: {answer.fail_with}")
            return
        if answer.close_reason is not None:
            await self.send({
                "type": "session.closed", "event_id": self._id("event"),
                "reason": answer.close_reason, "session": self.resource(), "usage": self.usage(),
            })
            await self.ws.close()
            return
        audio = answer.audio_bytes(seed=self._answers)
        start = self.now_ms
        self._speaking_until = start + len(audio) // 8
        fragments = answer.timed_fragments(len(audio) // 8)
        if await self.stream(audio, fragments, start, drop_after_ms=answer.drop_after_ms):
            await self.send({
                "type": "session.usage.updated", "event_id": self._id("event"),
                "usage": self.usage(),
            })

    async def stream(
        self, audio: bytes, fragments: list[ScriptedFragment], start: int,
        drop_after_ms: int | None = None,
    ) -> bool:
        """Stream ``audio`` paced on the timeline, each fragment once its audio is out;
        False when the socket was dropped on purpose."""
        total = len(audio)
        chunk = max(FRAME, self.standin.chunk_ms * 8)
        self._answer_sent = 0
        pending = list(fragments)
        lead = self.standin.lead_ms
        for offset in range(0, total, chunk):
            # Real-time pace: never more than lead_ms ahead of the timeline.
            while offset // 8 > self.now_ms - start + lead:
                self._timeline.clear()
                await self._timeline.wait()
            if drop_after_ms is not None and offset // 8 >= drop_after_ms:
                await self.ws.close(1011, "stand-in drop")
                return False
            piece = audio[offset : offset + chunk]
            await self.send({
                "type": "session.output_audio.delta",
                "delta": base64.b64encode(piece).decode(),
            })
            self.output_audio.extend(piece)
            self._answer_sent = offset + len(piece)
            # A fragment goes out once its audio has been streamed.
            while pending and pending[0].end_ms * 8 <= self._answer_sent:
                await self._fragment(pending.pop(0), start)
            await asyncio.sleep(0)
        for fragment in pending:
            await self._fragment(fragment, start)
        return True

    async def _fragment(self, fragment: ScriptedFragment, start: int) -> None:
        await self.send({
            "type": "session.output_transcript.delta", "event_id": self._id("event"),
            "delta": fragment.delta, "start_ms": start + fragment.start_ms,
            "end_ms": start + max(fragment.start_ms, fragment.end_ms),
        })

    async def interrupt(self, at_ms: int) -> None:
        """The caller started speaking at ``at_ms``: the answer being spoken stops there."""
        if at_ms >= self._speaking_until:
            return  # the model is not speaking (on the timeline)
        await self.stop_speaking()
        self._speaking_until = at_ms
        self.interruptions.append({"at_ms": at_ms, "sent_ms": self._answer_sent // 8})

    # ---- delegation -------------------------------------------------------------------

    async def delegate(self, answer: ScriptedLiveAnswer) -> None:
        call = answer.delegate
        assert call is not None
        delegation_id = self._id("deleg")
        call_id = call.call_id or self._id("call")
        self._pending_tool = call_id
        self._tool_answered = False
        await self.send({
            "type": "session.delegation.created", "event_id": self._id("event"),
            "offset_ms": self.now_ms,
            "delegation": {"id": delegation_id, "target": "responses", "type": "delegation",
                           "response_id": self._id("resp")},
        })
        await self.send({
            "type": "response.event", "event_id": self._id("event"),
            "delegation_id": delegation_id,
            "event": {
                "type": "response.output_item.done", "output_index": 0, "sequence_number": 1,
                "item": {"type": "function_call", "id": self._id("fc"), "call_id": call_id,
                         "name": call.name, "arguments": call.arguments_json(),
                         "status": "completed"},
            },
        })

    async def delegate_to_client(self) -> None:
        delegation_id = self._id("deleg")
        self._pending_client = delegation_id
        await self.send({
            "type": "session.delegation.created", "event_id": self._id("event"),
            "offset_ms": self.now_ms,
            "delegation": {"id": delegation_id, "target": "client", "type": "delegation"},
        })

    def client_replied(self, delegation_id: str, etype: str, content: str) -> None:
        """The client answered a client delegation (commentary, thinking, instructions)."""
        self.delegation_replies.append((delegation_id, etype, content))
        if delegation_id == self._pending_client:
            self._pending_client = None
            self.speak(self.standin.next_answer())

    # ---- fixtures ---------------------------------------------------------------------

    async def play_fixture(self, event: dict[str, Any]) -> None:
        event_id = event.get("event_id")
        if self.fixture_active is not None:
            await self.error("fixture_already_active", "An audio fixture is already playing.",
                             "audio", event_id)
            return
        try:
            pcm = base64.b64decode(str(event.get("audio", "")), validate=True)
        except (binascii.Error, ValueError):
            pcm = b""
        if not pcm or len(pcm) % 2 or len(pcm) > FIXTURE_MAX_BYTES:
            await self.error(
                "invalid_fixture_audio",
                "The fixture must be base64 mono PCM16 at 24 kHz, at most 30 seconds.",
                "audio", event_id)
            return
        await self.stop_speaking()  # the model's speech is interrupted
        self._speaking_until = self.now_ms
        self.fixture_active = str(event_id or "")
        self._speaking = asyncio.ensure_future(self._fixture(pcm, event_id))

    async def _fixture(self, pcm: bytes, event_id: Any) -> None:
        echo = {"client_event_id": event_id} if event_id else {}
        record: dict[str, Any] = {"event_id": event_id, "pcm_bytes": len(pcm), "sent": 0}
        self.fixtures.append(record)
        await self.send({"type": "session.output_audio.fixture.playing",
                         "event_id": self._id("event"), **echo})
        audio = fixture_to_ulaw(pcm)
        try:
            await self.stream(audio, [], self.now_ms)
            record["sent"] = len(audio)
            await self.send({"type": "session.output_audio.fixture.played",
                             "event_id": self._id("event"), **echo})
        finally:
            self.fixture_active = None
