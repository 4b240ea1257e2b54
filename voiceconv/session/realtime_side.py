"""The Realtime side of the call core: server events in, actions out.

:class:`RealtimeSide` is a part of :class:`~voiceconv.session.core.CallSession`: it turns the
OpenAI Realtime server events of ``docs/protocols.md`` §R3 into actions (assistant audio with its
marks, barge-in, turns, responses and function calls). Only the names in
:data:`REALTIME_HANDLERS` are ever dispatched: an event named like a Twilio message or like a
method of the core is an event the call does not know.
"""

from __future__ import annotations

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
    RecordBargeIn,
    RecordFirstAudio,
    RecordMilestone,
    RecordTurn,
    RecordUsage,
    RunTools,
    SendToRealtime,
    SendToTwilio,
    ToolCall,
)
from voiceconv.session.limits import NEVER, LimitClock, Limits
from voiceconv.session.messages import BadEvent, dumps, obj
from voiceconv.session.playback import AssistantItem, Playback, estimate_heard
from voiceconv.session.state import CallState

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


class RealtimeSide:
    """Realtime server events of one call (the state lives on the session)."""

    state: CallState
    playback: Playback
    clock: LimitClock
    limits: Limits
    deadline_ms: int
    greeting: str
    instructions: str
    interrupt_response: bool
    transcription: bool
    pending_transcripts: set[str]
    history: deque[tuple[str, str]]
    _early: deque[str]
    media: bool
    _media_prefix: str
    _mark_prefix: str
    _input_origin_ms: int | None
    _muted_responses: set[str]
    _muted_items: set[str]
    _speech_start_ms: dict[str, int]
    _last_speech_stop_ms: int | None
    _first_audio_recorded: bool
    _open_calls: set[str]
    _stale_items: set[str]
    _greeted: bool
    hold_greeting: bool
    _reconnecting: bool
    _flushing: bool
    _flush_rounds: int
    _known_calls: dict[str, tuple[int, str | None]]
    _running: dict[str, ToolCall]
    _turn_unanswered: bool
    _last_request: str
    _idle_items: set[str]
    auto_response: bool
    append_prefix: str
    greeting_reasoning_effort: str | None

    # Provided by Control (turn-taking), the other part of the session.
    def _request_response(self) -> list[Action]:
        raise NotImplementedError

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

    def handle_twilio_dtmf(self, msg: dict[str, Any]) -> list[Action]:
        raise NotImplementedError

    def say(
        self, instructions: str, *, queue: bool = False, reasoning_effort: str | None = None
    ) -> list[Action]:
        raise NotImplementedError

    def request_hangup(self, reason: str = "agent_ended") -> list[Action]:
        raise NotImplementedError

    def realtime_audio_delta(
        self, item_id: str, response_id: str, delta: str
    ) -> tuple[str, str] | None:
        """An assistant audio chunk: return (Twilio media text, Twilio mark text), or None."""
        if response_id in self._muted_responses or item_id in self._muted_items:
            muted = self.playback.items.get(item_id)
            if muted is not None:
                muted.dropped = True
            return None
        item = self.playback.item(item_id, response_id)
        seq = self.playback.sent(item, msgs.b64_decoded_len(delta), self.state.now_ms)
        self.state.frames_out += 1
        return (
            self._media_prefix + delta + '"}}',
            self._mark_prefix + str(seq) + '"}}',
        )

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
        if self._first_audio_recorded and self._last_speech_stop_ms is None:
            return out
        actions: list[Action] = [SendToTwilio(out[0]), SendToTwilio(out[1])]
        actions.extend(self.after_delta())
        return actions

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
            if out is None:
                return []
            actions: list[Action] = [SendToTwilio(out[0]), SendToTwilio(out[1])]
            actions.extend(self.after_delta())
            return actions
        if not isinstance(etype, str):
            return [Log("warning", "Realtime event without a type ignored")]
        handler = REALTIME_HANDLERS.get(etype)
        if handler is None:
            return []  # an event the call does not act on (or one it does not know)
        return handler(self, event)

    def after_delta(self) -> list[Action]:
        """Bookkeeping after the first delta of a turn (latency, first audio)."""
        if self._first_audio_recorded and self._last_speech_stop_ms is None:
            return []
        actions: list[Action] = []
        if not self._first_audio_recorded:
            self._first_audio_recorded = True
            actions.append(RecordFirstAudio(self.state.now_ms))
        if self._last_speech_stop_ms is not None:
            latency = max(0, self.state.now_ms - self._last_speech_stop_ms)
            self._last_speech_stop_ms = None
            last = self.playback.last_sent()  # attribute it to the item just sent
            if last is not None:
                last.latency_ms = latency
        return actions

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

    def handle_input_audio_buffer_speech_started(self, event: dict[str, Any]) -> list[Action]:
        st = self.state
        self.clock.activity(st.now_ms)
        st.caller_speaking = True
        item_id = event.get("item_id")
        if isinstance(item_id, str):
            self._speech_start_ms[item_id] = st.now_ms
        return self.barge_in()

    def barge_in(self) -> list[Action]:
        """The caller started speaking: stop what they are hearing, truncate at what they heard.

        See ``docs/protocols.md`` §R5.
        """
        st = self.state
        actions: list[Action] = []
        if not self.interrupt_response:
            return actions  # an uninterruptible agent: no clear, no truncate, no cancel
        if st.response_active and st.active_response_id:
            # In-flight deltas of a response being generated are not to be played.
            self._muted_responses.add(st.active_response_id)
        if not self.playback.playing():
            return actions
        actions.append(SendToTwilio(msgs.clear_message(st.stream_sid)))
        for item, heard_bytes in self.playback.cut(st.now_ms):
            item.interrupted = True
            item.heard_ms = heard_bytes // 8
            item.truncated = True
            self._muted_items.add(item.item_id)
            self._muted_responses.add(item.response_id)
            if item.item_id not in self._stale_items:
                actions.append(SendToRealtime(msgs.truncate_event(item.item_id, item.heard_ms)))
            actions.extend(self._maybe_record_item(item))
        actions.append(RecordBargeIn())
        return actions

    def handle_input_audio_buffer_speech_stopped(self, event: dict[str, Any]) -> list[Action]:
        self.state.caller_speaking = False
        self.clock.activity(self.state.now_ms)
        end = event.get("audio_end_ms")
        if isinstance(end, int) and self._input_origin_ms is not None:
            self._last_speech_stop_ms = self._input_origin_ms + end
        else:
            self._last_speech_stop_ms = self.state.now_ms
        return []

    def handle_input_audio_buffer_timeout_triggered(
        self, event: dict[str, Any]
    ) -> list[Action]:
        """The server's idle timeout fired: it reprompts the caller itself (an empty user item
        and a response follow). A second one with the caller silent since ends the call."""
        st = self.state
        item_id = event.get("item_id")
        if isinstance(item_id, str):
            self._idle_items.add(item_id)  # its commit is not the caller's doing
        if self.auto_response and not st.response_active:
            st.response_active = True  # owed: the server answers the empty item itself
        if st.ended or st.hangup_reason is not None:
            return []
        if self.clock.idle_stage == 0:
            self.clock.idle_stage = 1
            self.clock.last_activity_ms = st.now_ms
            return [Log("info", "caller silent: the server's idle timeout reprompts them")]
        actions: list[Action] = [Log("info", "caller still silent: ending the call")]
        actions.extend(self.say(self.limits.goodbye_instructions, queue=True))
        actions.extend(self.request_hangup("idle"))
        self.deadline_ms = NEVER
        return actions

    def handle_input_audio_buffer_committed(self, event: dict[str, Any]) -> list[Action]:
        item_id = event.get("item_id")
        if item_id in self._idle_items:
            # The server's idle reprompt: an empty user item, answered by the server.
            self._idle_items.discard(item_id)
            return []
        self.clock.activity(self.state.now_ms)
        self._turn_unanswered = True
        if self.transcription and isinstance(item_id, str):
            self.pending_transcripts.add(item_id)
        if not self.auto_response:
            # The server commits the caller's turn but does not answer it: the bridge does.
            return self._request_response()
        return []

    def handle_transcription_completed(self, event: dict[str, Any]) -> list[Action]:
        item_id = event.get("item_id")
        self.pending_transcripts.discard(item_id)
        text = str(event.get("transcript") or "").strip()
        if not text:
            return []
        offset = self._speech_start_ms.pop(item_id, None) if isinstance(item_id, str) else None
        self.history.append(("user", text))
        return [
            RecordTurn(
                TranscriptTurn(
                    role="caller",
                    text=text,
                    item_id=item_id if isinstance(item_id, str) else None,
                    offset_ms=offset,
                )
            )
        ]

    def handle_transcription_failed(self, event: dict[str, Any]) -> list[Action]:
        self.pending_transcripts.discard(event.get("item_id"))
        err = obj(event.get("error"))
        return [Log("warning", f"caller transcription failed: {err.get('message')}")]

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

    def handle_input_audio_buffer_dtmf_event_received(self, event: dict[str, Any]) -> list[Action]:
        """SIP: a key the caller pressed, reported by the service; the same rule as Twilio's
        ``dtmf`` (recorded, grouped, told to the model)."""
        return self.handle_twilio_dtmf({"dtmf": {"digit": str(event.get("event") or "")}})

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
                )
            )
        ]



#: Realtime server event ``type`` → handler. Only these names are ever dispatched from OpenAI.
REALTIME_HANDLERS: dict[str, Handler] = {
    "session.updated": RealtimeSide.handle_session_updated,
    "error": RealtimeSide.handle_error,
    "input_audio_buffer.speech_started": RealtimeSide.handle_input_audio_buffer_speech_started,
    "input_audio_buffer.speech_stopped": RealtimeSide.handle_input_audio_buffer_speech_stopped,
    "input_audio_buffer.committed": RealtimeSide.handle_input_audio_buffer_committed,
    "conversation.item.input_audio_transcription.completed":
        RealtimeSide.handle_transcription_completed,
    "conversation.item.input_audio_transcription.failed": RealtimeSide.handle_transcription_failed,
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
        RealtimeSide.handle_input_audio_buffer_dtmf_event_received,
    "output_audio_buffer.stopped": RealtimeSide.handle_output_audio_buffer_stopped,
    "output_audio_buffer.cleared": RealtimeSide.handle_output_audio_buffer_stopped,
    "input_audio_buffer.timeout_triggered":
        RealtimeSide.handle_input_audio_buffer_timeout_triggered,
}

