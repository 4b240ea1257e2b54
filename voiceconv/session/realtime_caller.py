"""The caller's side of the Realtime events: what the caller says, and the caller barging in.

:class:`CallerSide` is a part of :class:`~voiceconv.session.realtime_side.RealtimeSide` (and so of
:class:`~voiceconv.session.core.CallSession`): the input audio buffer's events (speech started
and stopped, committed, the server's idle timeout), the barge-in they start, the caller's
transcripts and key presses reported by the service. The assistant's side (session, audio out,
responses, items) is :mod:`~voiceconv.session.realtime_side`, which also holds the dispatch
table of both.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from voiceconv.events import TranscriptTurn
from voiceconv.session import messages as msgs
from voiceconv.session.actions import (
    Action,
    Log,
    RecordBargeIn,
    RecordTurn,
    SendToRealtime,
    SendToTwilio,
    StampTime,
)
from voiceconv.session.limits import NEVER, LimitClock, Limits
from voiceconv.session.messages import obj
from voiceconv.session.playback import AssistantItem, Playback
from voiceconv.session.state import CallState

__all__ = ["CallerSide"]


class CallerSide:
    """Realtime events about the caller (the state lives on the session)."""

    state: CallState
    playback: Playback
    clock: LimitClock
    limits: Limits
    deadline_ms: int
    interrupt_response: bool
    transcription: bool
    auto_response: bool
    pending_transcripts: set[str]
    history: deque[tuple[str, str]]
    _input_origin_ms: int | None
    _muted_responses: set[str]
    _muted_items: set[str]
    _stale_items: set[str]
    _speech_start_ms: dict[str, int]
    _last_speech_stop_ms: int | None
    _idle_items: set[str]
    _turn_unanswered: bool

    # Provided by the other parts of the session.
    def _maybe_record_item(self, item: AssistantItem) -> list[Action]:
        raise NotImplementedError

    def _request_response(self) -> list[Action]:
        raise NotImplementedError

    def handle_twilio_dtmf(self, msg: dict[str, Any]) -> list[Action]:
        raise NotImplementedError

    def say(
        self, instructions: str, *, queue: bool = False, reasoning_effort: str | None = None
    ) -> list[Action]:
        raise NotImplementedError

    def request_hangup(self, reason: str = "agent_ended") -> list[Action]:
        raise NotImplementedError

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
        return [StampTime("caller_stopped")]  # the answer's time to first audio starts here

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

    def handle_input_audio_buffer_dtmf_event_received(self, event: dict[str, Any]) -> list[Action]:
        """SIP: a key the caller pressed, reported by the service; the same rule as Twilio's
        ``dtmf`` (recorded, grouped, told to the model)."""
        return self.handle_twilio_dtmf({"dtmf": {"digit": str(event.get("event") or "")}})
