"""The Realtime side of the call core: server events in, actions out.

:class:`RealtimeSide` is a part of :class:`~voiceconv.session.core.CallSession`: it turns the
OpenAI Realtime server events of ``docs/protocols.md`` §R3 into actions: the session, assistant
audio with its marks and timing, responses, their items and function calls. The caller's events
(turns, barge-in, transcripts) are :mod:`~voiceconv.session.realtime_caller`'s. Only the names in
:data:`REALTIME_HANDLERS` are ever dispatched: an event named like a Twilio message or like a
method of the core is an event the call does not know.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from typing import Any

from voiceconv.events import TranscriptTurn, Usage
from voiceconv.session import messages as msgs
from voiceconv.session.actions import (
    Action,
    EndCall,
    FlushEarlyAudio,
    Log,
    RecordFirstAudio,
    RecordMilestone,
    RecordTurn,
    RecordUsage,
    RunTools,
    SendToRealtime,
    SendToTwilio,
    StampTime,
    ToolCall,
)
from voiceconv.session.messages import BadEvent, dumps, obj
from voiceconv.session.playback import AssistantItem, estimate_heard
from voiceconv.session.realtime_caller import CallerSide
from voiceconv.session.timing import TurnTimer, shares

#: Realtime error codes that are harmless when they happen (logged at debug).
BENIGN_ERROR_CODES = frozenset(
    {
        "conversation_already_has_active_response",
        "response_cancel_not_active",
        "input_audio_buffer_commit_empty",
    }
)


#: Rounds of sending caller audio buffered during the early-audio flush from the Realtime
#: side before the Twilio side takes over (see :meth:`RealtimeSide.early_audio_sent`).
FLUSH_ROUNDS = 4

Handler = Callable[["RealtimeSide", dict[str, Any]], list[Action]]


def as_actions(out: tuple[str, str] | list[Action]) -> list[Action]:
    """What :meth:`RealtimeSide.audio_out` returned, as actions."""
    return out if isinstance(out, list) else [SendToTwilio(out[0]), SendToTwilio(out[1])]


class RealtimeSide(CallerSide):
    """Realtime server events of one call (the state lives on the session); the caller's
    events are :class:`~voiceconv.session.realtime_caller.CallerSide`'s."""

    greeting: str
    instructions: str
    _early: deque[str]
    media: bool
    _media_prefix: str
    _mark_prefix: str
    _first_audio_recorded: bool
    #: The item whose first audio the last delta was (None: the last delta was no first).
    _began: AssistantItem | None
    timer: TurnTimer
    _open_calls: set[str]
    _greeted: bool
    hold_greeting: bool
    _reconnecting: bool
    _flushing: bool
    _flush_rounds: int
    _known_calls: dict[str, tuple[int, str | None]]
    _running: dict[str, ToolCall]
    _last_request: str
    append_prefix: str
    greeting_reasoning_effort: str | None

    # Provided by Control (turn-taking), the other part of the session.
    def busy(self) -> bool:
        raise NotImplementedError

    def _next_queued(self) -> list[Action]:
        raise NotImplementedError

    def _collided(self) -> list[Action]:
        raise NotImplementedError

    def _resume(self) -> list[Action]:
        raise NotImplementedError

    def _maybe_hang_up(self) -> list[Action]:
        raise NotImplementedError

    def realtime_audio_delta(
        self, item_id: str, response_id: str, delta: str
    ) -> tuple[str, str] | None:
        """An assistant audio chunk: return (Twilio media text, Twilio mark text), or None.

        Pass what it returns through :meth:`audio_out`, which turns an item's first chunk
        into actions (its timing and the call's first audio)."""
        if response_id in self._muted_responses or item_id in self._muted_items:
            muted = self.playback.items.get(item_id)
            if muted is not None:
                muted.dropped = True
            return None
        item = self.playback.item(item_id, response_id)
        self._began = None if item.sent else item
        seq = self.playback.sent(item, msgs.b64_decoded_len(delta), self.state.now_ms)
        self.state.frames_out += 1
        return (
            self._media_prefix + delta + '"}}',
            self._mark_prefix + str(seq) + '"}}',
        )

    def audio_out(self, out: tuple[str, str]) -> tuple[str, str] | list[Action]:
        """What :meth:`realtime_audio_delta` returned, as sent: the two texts as they are
        (the fast path), or, for an item's first chunk, the actions that send and time it.

        The first chunk of every assistant item is timed (the bridge's share:
        :mod:`~voiceconv.session.timing`); the first one after the caller stopped speaking
        is the answer (its latency on the call clock, and the model's share); the call's
        very first one is the call's first audio."""
        item = self._began
        if item is None:
            return out
        self._began = None
        answer = self._last_speech_stop_ms is not None
        if answer:
            assert self._last_speech_stop_ms is not None
            item.latency_ms = max(0, self.state.now_ms - self._last_speech_stop_ms)
            self._last_speech_stop_ms = None
        actions: list[Action] = [
            StampTime("audio_received", item.item_id, answer),
            SendToTwilio(out[0]),
            StampTime("audio_sent", item.item_id),
            SendToTwilio(out[1]),
        ]
        if not self._first_audio_recorded:
            self._first_audio_recorded = True
            actions.append(RecordFirstAudio(self.state.now_ms))
        return actions

    def stamp(self, stamp: StampTime, at: float) -> None:
        """The I/O layer ran ``stamp`` at ``at`` (seconds of its monotonic clock)."""
        self.timer.stamp(stamp, at, self.playback.items)

    # ----------------------------------------------------------------- Realtime side

    def receive_realtime(self, data: str | bytes) -> tuple[str, str] | list[Action]:
        """One Realtime server event as received.

        An assistant audio delta returns (Twilio media text, Twilio mark text) to send, unless
        there is bookkeeping to record with it (then a list of actions). Anything else returns
        the actions to run.
        """
        try:
            event = msgs.parse_realtime(data)
            if event["type"] != "response.output_audio.delta":
                return self.handle_realtime(event)
            if not self.media:
                return [Log("debug", "assistant audio on a call without media ignored")]
            delta, item_id, response_id = msgs.audio_delta_fields(event)
        except BadEvent as bad:
            return [Log("warning", str(bad))]
        out = self.realtime_audio_delta(item_id, response_id, delta)
        if out is None:
            return []
        return out if self._began is None else self.audio_out(out)  # timed: a first chunk

    def handle_realtime(self, event: dict[str, Any]) -> list[Action]:
        """A parsed Realtime server event (audio deltas included, without the fast path)."""
        if not isinstance(event, dict):
            return [Log("warning", "Realtime event that is not an object ignored")]
        etype = event.get("type")
        if etype == "response.output_audio.delta":
            if not self.media:
                return [Log("debug", "assistant audio on a call without media ignored")]
            delta = event.get("delta")
            if type(delta) is not str or not msgs.is_base64(delta):
                return [Log("warning", "Realtime audio delta that is not base64 dropped")]
            out = self.realtime_audio_delta(
                str(event.get("item_id", "")), str(event.get("response_id", "")), delta
            )
            return [] if out is None else as_actions(self.audio_out(out))
        if not isinstance(etype, str):
            return [Log("warning", "Realtime event without a type ignored")]
        handler = REALTIME_HANDLERS.get(etype)
        if handler is None:
            return []  # an event the call does not act on (or one it does not know)
        return handler(self, event)

    def handle_session_updated(self, event: dict[str, Any]) -> list[Action]:
        st = self.state
        if st.realtime_ready:
            return []
        st.realtime_ready = True
        actions: list[Action] = [RecordMilestone("session_ready")]
        if self._early:
            self._input_origin_ms = st.now_ms - 20 * (len(self._early) - 1)
            # Sent from here (the caller may be silent): live frames queue behind them.
            self._flushing = True
            self._flush_rounds = 0
            actions.extend(self._drain_early())
            actions.append(FlushEarlyAudio())
        if not self.hold_greeting:
            actions.extend(self.greet())
        if self._reconnecting:
            self._reconnecting = False
            actions.extend(self._resume())
        return actions

    def early_audio_sent(self) -> list[Action]:
        """The caller audio buffered before the session was ready has been sent.

        Live frames that arrived meanwhile were buffered behind it: they are sent next, in
        order, and the fast path resumes once a round finds nothing buffered. After
        :data:`FLUSH_ROUNDS` rounds (a caller stream arriving faster than it can be sent), the
        Twilio side takes over: its next frame takes the buffer along, so this task is never
        held up for long."""
        self._flush_rounds += 1
        if not self._early or not self.state.realtime_ready or (
            self._flush_rounds >= FLUSH_ROUNDS
        ):
            self._flushing = False
            return []
        return [*self._drain_early(), FlushEarlyAudio()]

    def _drain_early(self) -> list[Action]:
        """Every buffered caller frame, oldest first, to send now (the session is ready)."""
        actions: list[Action] = [
            SendToRealtime(self.append_prefix + payload + '"}') for payload in self._early
        ]
        self._early.clear()
        return actions

    def greet(self) -> list[Action]:
        """Say the greeting now, once (when the session is ready and nothing is playing)."""
        st = self.state
        if not self.greeting or self._greeted or not st.realtime_ready or self.busy():
            return []
        self._greeted = True
        instructions = self.greeting
        if self.instructions:
            instructions = self.instructions + "\n\n" + self.greeting
        st.response_active = True  # owed: the server will answer with response.created
        # Not asked again if it meets a response already under way (the caller spoke first).
        self._last_request = ""
        response: dict[str, Any] = {"instructions": instructions}
        if self.greeting_reasoning_effort:
            response["reasoning"] = {"effort": self.greeting_reasoning_effort}
        return [SendToRealtime(dumps({"type": "response.create", "response": response}))]

    def reseed_events(self) -> list[str]:
        """``conversation.item.create`` events replaying the conversation so far, in order
        (for a new session after a drop)."""
        events: list[str] = []
        for role, text in self.history:
            if role == "assistant":
                events.append(dumps(msgs.assistant_text_item(text)))
            elif role in ("function_call", "function_call_output"):
                item = {"type": role, **json.loads(text)}
                events.append(dumps({"type": "conversation.item.create", "item": item}))
            else:
                role = "system" if role == "system" else "user"
                events.append(dumps(msgs.user_text_item(text, role=role)))
        return events

    def handle_error(self, event: dict[str, Any]) -> list[Action]:
        """A Realtime ``error`` event, by code (``docs/protocols.md`` §R7)."""
        err = obj(event.get("error"))
        code = err.get("code")
        code = code if isinstance(code, str) else None
        message = f"Realtime error {err.get('type')}/{code}: {err.get('message')}"
        if code == "conversation_already_has_active_response":
            return [Log("debug", message), *self._collided()]
        if code in BENIGN_ERROR_CODES:
            return [Log("debug", message)]
        if code == "session_expired":
            # The server closes the socket next; the bridge opens a new session and re-seeds it.
            return [Log("warning", message)]
        if code in {"invalid_api_key", "insufficient_quota"}:
            return [Log("error", message), EndCall("openai_error", message, apologise=True)]
        if code == "unknown_parameter" and not self.state.realtime_ready:
            return [Log("error", message), EndCall("openai_error", message, apologise=True)]
        return [Log("warning", message)]
    def handle_response_created(self, event: dict[str, Any]) -> list[Action]:
        st = self.state
        st.response_active = True
        self.clock.last_activity_ms = st.now_ms
        rid = obj(event.get("response")).get("id")
        st.active_response_id = rid if isinstance(rid, str) else None
        return []

    def handle_response_output_item_added(self, event: dict[str, Any]) -> list[Action]:
        item = obj(event.get("item"))
        if item.get("type") == "message" and item.get("role") == "assistant":
            self._turn_unanswered = False
            item_id = item.get("id")
            rid = event.get("response_id")
            if isinstance(item_id, str):
                self.playback.item(item_id, rid if isinstance(rid, str) else "")
        return []

    def handle_response_output_audio_transcript_delta(self, event: dict[str, Any]) -> list[Action]:
        item = self.playback.items.get(str(event.get("item_id")))
        if item is not None and not item.transcript_done:
            item.transcript += str(event.get("delta") or "")
        return []

    def handle_response_output_audio_transcript_done(self, event: dict[str, Any]) -> list[Action]:
        item = self.playback.items.get(str(event.get("item_id")))
        if item is None:
            return []
        transcript = event.get("transcript")
        if isinstance(transcript, str):
            item.transcript = transcript
        item.transcript_done = True
        return self._maybe_record_item(item)

    def handle_response_output_audio_done(self, event: dict[str, Any]) -> list[Action]:
        item = self.playback.items.get(str(event.get("item_id")))
        if item is None:
            return []
        item.audio_done = True
        actions: list[Action] = []
        if item.dropped and not item.truncated:
            # Audio generated after the interruption never reached the caller.
            item.truncated = True
            item.interrupted = True
            item.heard_ms = item.sent // 8
            actions.append(SendToRealtime(msgs.truncate_event(item.item_id, item.heard_ms)))
        actions.extend(self._maybe_record_item(item))
        return actions

    def handle_response_done(self, event: dict[str, Any]) -> list[Action]:
        st = self.state
        self.clock.last_activity_ms = st.now_ms
        response = obj(event.get("response"))
        st.response_active = False
        st.active_response_id = None
        actions: list[Action] = [RecordUsage(Usage.from_response(response.get("usage")))]
        status = response.get("status")
        if status == "failed":
            details = obj(response.get("status_details"))
            actions.append(Log("warning", f"response failed: {details}"))
        calls: list[ToolCall] = []
        if status == "completed":
            outputs = response.get("output")
            for out in outputs if isinstance(outputs, list) else []:
                if isinstance(out, dict) and out.get("type") == "function_call":
                    calls.append(
                        ToolCall(
                            call_id=str(out.get("call_id", "")),
                            name=str(out.get("name", "")),
                            arguments=str(out.get("arguments") or "{}"),
                            item_id=out.get("id") if isinstance(out.get("id"), str) else None,
                        )
                    )
        # Items of this response without audio (text-only or never played) are final now.
        for item in list(self.playback.items.values()):
            if item.response_id == response.get("id"):
                item.audio_done = True
                item.transcript_done = True
                actions.extend(self._maybe_record_item(item))
        if calls:
            for c in calls:
                self._running[c.call_id] = c
                self._open_calls.add(c.call_id)
                self._known_calls[c.call_id] = (st.now_ms, c.item_id)
                self.history.append(("function_call", dumps(
                    {"call_id": c.call_id, "name": c.name, "arguments": c.arguments})))
            st.tools_running += len(calls)
            actions.append(RunTools(tuple(calls)))
        else:
            actions.extend(self._next_queued())
        actions.extend(self._maybe_hang_up())
        return actions

    def handle_output_audio_buffer_started(self, event: dict[str, Any]) -> list[Action]:
        """SIP/WebRTC: the service started playing an answer to the caller itself."""
        self.state.server_playing = True
        return []

    def handle_output_audio_buffer_stopped(self, event: dict[str, Any]) -> list[Action]:
        """SIP/WebRTC: the service's playback drained (or was cleared): the answer was heard."""
        st = self.state
        st.server_playing = False
        self.clock.last_activity_ms = st.now_ms
        return self._maybe_hang_up()

    def _maybe_record_item(self, item: AssistantItem) -> list[Action]:
        if item.recorded:
            return []
        if not item.interrupted:
            if not (item.audio_done and item.transcript_done):
                return []
            if self.playback.still_playing(item):
                return []
        elif not item.transcript_done:
            return []  # the transcript is still coming; recorded at transcript.done
        item.recorded = True
        if not item.transcript and item.sent == 0:
            return []
        total_ms = item.sent // 8
        heard_ms = total_ms if item.heard_ms is None else min(item.heard_ms, total_ms)
        interrupted = item.interrupted and heard_ms < total_ms
        heard_text = estimate_heard(item.transcript, heard_ms, total_ms) if interrupted else None
        if item.transcript and not item.reseeded:
            said = item.transcript if heard_text is None else heard_text
            self.history.append(("assistant", said))
        first_audio_ms, model_ms, bridge_ms = shares(item)
        return [
            RecordTurn(
                TranscriptTurn(
                    role="assistant",
                    text=item.transcript,
                    item_id=item.item_id,
                    offset_ms=item.first_sent_ms,
                    latency_ms=item.latency_ms,
                    interrupted=interrupted,
                    heard_ms=heard_ms,
                    total_ms=total_ms,
                    heard_text=heard_text,
                    first_audio_ms=first_audio_ms,
                    model_ms=model_ms,
                    bridge_ms=bridge_ms,
                )
            )
        ]



#: Realtime server event ``type`` → handler. Only these names are ever dispatched from OpenAI.
REALTIME_HANDLERS: dict[str, Handler] = {
    "session.updated": RealtimeSide.handle_session_updated,
    "error": RealtimeSide.handle_error,
    "input_audio_buffer.speech_started": CallerSide.handle_input_audio_buffer_speech_started,
    "input_audio_buffer.speech_stopped": CallerSide.handle_input_audio_buffer_speech_stopped,
    "input_audio_buffer.committed": CallerSide.handle_input_audio_buffer_committed,
    "conversation.item.input_audio_transcription.completed":
        CallerSide.handle_transcription_completed,
    "conversation.item.input_audio_transcription.failed": CallerSide.handle_transcription_failed,
    "response.created": RealtimeSide.handle_response_created,
    "response.output_item.added": RealtimeSide.handle_response_output_item_added,
    "response.output_audio_transcript.delta":
        RealtimeSide.handle_response_output_audio_transcript_delta,
    "response.output_audio_transcript.done":
        RealtimeSide.handle_response_output_audio_transcript_done,
    "response.output_audio.done": RealtimeSide.handle_response_output_audio_done,
    "response.done": RealtimeSide.handle_response_done,
    "output_audio_buffer.started": RealtimeSide.handle_output_audio_buffer_started,
    "input_audio_buffer.dtmf_event_received":
        CallerSide.handle_input_audio_buffer_dtmf_event_received,
    "output_audio_buffer.stopped": RealtimeSide.handle_output_audio_buffer_stopped,
    "output_audio_buffer.cleared": RealtimeSide.handle_output_audio_buffer_stopped,
    "input_audio_buffer.timeout_triggered":
        CallerSide.handle_input_audio_buffer_timeout_triggered,
}

