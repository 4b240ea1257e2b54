"""The GPT-Live side of the call core: GPT-Live server events in, the same actions out.

:class:`LiveCallSession` is the :class:`~voiceconv.session.core.CallSession` of a call whose
speech backend is GPT-Live (``protocols.md`` D2). The Twilio side, marks, limits, hang-ups and
the tool fan-out are the core's; what differs is here:

- the first message is ``session.start`` (:meth:`LiveCallSession.start_event`), audio goes in
  as ``session.input_audio.append`` and comes out as ``session.output_audio.delta``;
- turns are built from timed transcript fragments (:mod:`~voiceconv.session.live_turns`);
- barge-in clears Twilio but sends no truncate; greetings and spoken lines are commentary;
- tools run on the delegated Responses model's function calls; usage is in seconds;
- an optional opening clip plays word for word before the greeting
  (``session.output_audio.fixture.play``).

Where the types leave behaviour open, the choice made is a constant of
:mod:`~voiceconv.session.live_rules`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from voiceconv.events import TranscriptTurn
from voiceconv.session import live_rules as rules
from voiceconv.session import messages as msgs
from voiceconv.session.actions import (
    Action,
    EndCall,
    Log,
    RecordBargeIn,
    RecordSessionSeconds,
    RecordTurn,
    RunTools,
    SendToRealtime,
    SendToTwilio,
    StampTime,
    ToolCall,
    ToolOutcome,
)
from voiceconv.session.core import CallSession
from voiceconv.session.limits import NEVER
from voiceconv.session.live_turns import FragmentTurn, TurnBuilder
from voiceconv.session.messages import dumps, obj

__all__ = ["LIVE_APPEND_PREFIX", "LIVE_HANDLERS", "LiveCallSession", "OpeningClip"]

LIVE_APPEND_PREFIX = '{"type":"session.input_audio.append","audio":"'
AUDIO_DELTA = "session.output_audio.delta"
RESPONSE_CREATE = '{"type":"response.create"}'

#: The ``event_id`` of the opening clip's ``session.output_audio.fixture.play`` (its
#: ``.playing`` / ``.played`` and any error echo it as ``client_event_id``).
CLIP_EVENT_ID = "voiceconv_opening_clip"

LiveHandler = Callable[["LiveCallSession", dict[str, Any]], list[Action]]


class OpeningClip(Protocol):
    """A clip to open the call with (:class:`voiceconv.clips.Clip`)."""

    @property
    def name(self) -> str: ...
    @property
    def audio(self) -> str: ...  # base64 PCM16, 24 kHz, mono
    @property
    def text(self) -> str: ...


class LiveCallSession(CallSession):
    """One call on GPT-Live: Twilio messages and GPT-Live events in, actions out."""

    append_prefix = LIVE_APPEND_PREFIX

    def __init__(
        self, *, gap_ms: int = rules.TURN_GAP_MS, opening_clip: OpeningClip | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.turns = TurnBuilder(gap_ms)
        self.opening_clip = opening_clip
        #: The opening clip: "due" (not sent yet), "playing" (sent, not drained), "done".
        self.clip_state = "due" if opening_clip is not None else "done"
        self._clip_item: str | None = None
        #: Commentary and instructions held while the clip plays (the API rejects them then).
        self._held: list[str] = []
        #: The assistant item audio goes to now (None: the next audio starts a new one).
        self._live_item: str | None = None
        self._items_made = 0
        #: Caller spoke since the last assistant audio: the next audio is a new turn.
        self._caller_since_audio = False
        self.session_seconds = 0.0

    @classmethod
    def adopt(cls, old: CallSession, **options: Any) -> LiveCallSession:
        """A Live session taking over a call whose stream ``old`` has started."""
        new = cls(**options)
        new.state = old.state
        new.bad_input = old.bad_input
        new._media_prefix = old._media_prefix
        new._mark_prefix = old._mark_prefix
        for payload in old._early:
            new._early.append(payload)
        return new

    # ----------------------------------------------------------------- session.start

    def start_event(self, session: dict[str, Any]) -> str:
        """The ``session.start`` text for ``session``; after a drop it carries the history."""
        session = dict(session)
        items = self.initial_items()
        if items:
            session["input"] = items
        return dumps({"type": "session.start", "session": session})

    def initial_items(self) -> list[dict[str, Any]]:
        """The conversation so far as Live's text-only ``input`` items (newest kept)."""
        items: list[dict[str, Any]] = []
        for role, text in self.history:
            if role == "assistant":
                part = {"type": "output_text", "text": text}
                items.append({"type": "message", "role": "assistant", "content": [part]})
            elif role == "user":
                part = {"type": "input_text", "text": text}
                items.append({"type": "message", "role": "user", "content": [part]})
            else:  # tool calls and outputs, key presses: developer context
                part = {"type": "input_text", "text": f"[{role}] {text}"}
                items.append({"type": "message", "role": "developer", "content": [part]})
        return items[-rules.MAX_INITIAL_ITEMS :]

    def reseed_events(self) -> list[str]:
        return []  # the history travels in session.start (see start_event)

    # ----------------------------------------------------------------- events in

    def receive_realtime(self, data: str | bytes) -> tuple[str, str] | list[Action]:
        """One GPT-Live server event as received (audio deltas on the fast path)."""
        try:
            event = json.loads(data)
            etype = event["type"]
        except (ValueError, KeyError, TypeError, IndexError, RecursionError):
            text = data if isinstance(data, str) else data.decode("utf-8", "replace")
            return [Log("warning", f"malformed GPT-Live event ignored: {text[:120]!r}")]
        return self.handle_realtime(event) if etype != AUDIO_DELTA else self._audio(event)

    def handle_realtime(self, event: dict[str, Any]) -> list[Action]:
        if not isinstance(event, dict):
            return [Log("warning", "GPT-Live event that is not an object ignored")]
        etype = event.get("type")
        if etype == AUDIO_DELTA:
            out = self._audio(event)
            return list(out) if isinstance(out, list) else [SendToTwilio(o) for o in out]
        handler = LIVE_HANDLERS.get(etype) if isinstance(etype, str) else None
        return handler(self, event) if handler is not None else []

    def _audio(self, event: dict[str, Any]) -> tuple[str, str] | list[Action]:
        delta = event.get("delta")
        if type(delta) is not str or not msgs.is_base64(delta):
            return [Log("warning", "GPT-Live audio delta that is not base64 dropped")]
        if self._live_item is None or self._caller_since_audio:
            self._new_item()
        self.state.response_create_owed = False  # a spoken line we waited for has begun
        assert self._live_item is not None
        out = self.realtime_audio_delta(self._live_item, self._live_item, delta)
        if out is None:
            return []
        return out if self._began is None else self.audio_out(out)  # timed: a first chunk

    def _new_item(self) -> None:
        self._items_made += 1
        self._live_item = f"live_{self._items_made}"
        self._caller_since_audio = False
        self._turn_unanswered = False
        self.playback.item(self._live_item, self._live_item)

    def _call_ms(self, timeline_ms: Any) -> int:
        """Session timeline → call time (:data:`~live_rules.TIMELINE_IS_INPUT_AUDIO`)."""
        t = timeline_ms if isinstance(timeline_ms, int) else 0
        origin = self._input_origin_ms if self._input_origin_ms is not None else 0
        return origin + t

    def handle_session_started(self, event: dict[str, Any]) -> list[Action]:
        return self.handle_session_updated(event)

    def handle_input_transcript(self, event: dict[str, Any]) -> list[Action]:
        text = event.get("delta")
        if not isinstance(text, str):
            return []
        st = self.state
        self.clock.activity(st.now_ms)
        actions: list[Action] = []
        if text.strip() and rules.CLEAR_ON_CALLER_SPEECH:
            actions.extend(self.barge_in())
        self._caller_since_audio = True
        self._turn_unanswered = True
        end = self._call_ms(event.get("end_ms"))
        self._last_speech_stop_ms = min(end, st.now_ms) if end else st.now_ms
        # CALLER_STOPPED_IS_LAST_FRAGMENT: the answer's time to first audio starts here.
        actions.append(StampTime("caller_stopped"))
        start, stop = event.get("start_ms"), event.get("end_ms")
        for turn in self.turns.add("caller", text, _ms(start), _ms(stop, _ms(start))):
            actions.extend(self._record(turn))
        return actions

    def handle_output_transcript(self, event: dict[str, Any]) -> list[Action]:
        text = event.get("delta")
        if not isinstance(text, str):
            return []
        if self._live_item is None or self._caller_since_audio:
            self._new_item()  # the words came before their audio
        start = _ms(event.get("start_ms"))
        stop = _ms(event.get("end_ms"), start)
        open_turn = self.turns.open.get("assistant")
        if open_turn is not None and start - open_turn.end_ms > self.turns.gap_ms:
            self._new_item()  # a pause longer than the gap: a new assistant turn
        actions: list[Action] = []
        for turn in self.turns.add("assistant", text, start, stop, tag=self._live_item):
            actions.extend(self._record(turn))
        return actions

    def barge_in(self) -> list[Action]:
        """Caller speech over queued assistant audio: clear Twilio; the model stops itself."""
        st = self.state
        if not self.interrupt_response or not self.playback.playing():
            return []
        actions: list[Action] = [SendToTwilio(msgs.clear_message(st.stream_sid))]
        for item, heard_bytes in self.playback.cut(st.now_ms):
            item.interrupted = True
            item.heard_ms = heard_bytes // 8
            item.truncated = True  # nothing to send: the API has no truncate
            actions.extend(self._maybe_record_item(item))
        self._live_item = None  # PLAY_AUDIO_AFTER_BARGE_IN: what comes next is a new turn
        actions.append(RecordBargeIn())
        return actions

    def _record(self, turn: FragmentTurn) -> list[Action]:
        if turn.speaker == "caller":
            self.history.append(("user", turn.text))
            return [RecordTurn(TranscriptTurn(
                role="caller", text=turn.text, offset_ms=self._call_ms(turn.start_ms)))]
        item = self.playback.items.get(turn.tag or "")
        if item is None:
            self.history.append(("assistant", turn.text))
            return [RecordTurn(TranscriptTurn(
                role="assistant", text=turn.text, offset_ms=self._call_ms(turn.start_ms)))]
        item.transcript = turn.text
        item.transcript_done = item.audio_done = True
        if self._live_item == item.item_id:
            self._live_item = None
        return self._maybe_record_item(item)

    def handle_delegation_created(self, event: dict[str, Any]) -> list[Action]:
        delegation = obj(event.get("delegation"))
        ident = delegation.get("id")
        if delegation.get("target") != "client" or not isinstance(ident, str):
            return []
        # TOOLS_THROUGH_RESPONSES_DELEGATION: a client delegation names no task, so nothing
        # can run; CLIENT_DELEGATION_DECLINED: the model is told so, and the call goes on.
        event = {"type": "session.thinking.append", "content": rules.CLIENT_DELEGATION_REPLY,
                 "delegation_id": ident}
        return [Log("info", f"client delegation {ident} declined: it names no task to run"),
                *self._send_context(dumps(event))]

    def handle_response_event(self, event: dict[str, Any]) -> list[Action]:
        inner = obj(event.get("event"))
        kind = inner.get("type")
        if kind in ("response.failed", "error"):
            return [Log("warning", f"delegated response failed: {str(inner)[:200]}")]
        item = obj(inner.get("item"))
        if kind != "response.output_item.done" or item.get("type") != "function_call":
            return []
        st = self.state
        call = ToolCall(
            call_id=str(item.get("call_id", "")),
            name=str(item.get("name", "")),
            arguments=str(item.get("arguments") or "{}"),
            item_id=item.get("id") if isinstance(item.get("id"), str) else None,
        )
        self._open_calls.add(call.call_id)
        self._known_calls[call.call_id] = (st.now_ms, call.item_id)
        self.history.append(("function_call", dumps(
            {"call_id": call.call_id, "name": call.name, "arguments": call.arguments})))
        st.tools_running += 1
        return [RunTools((call,))]

    def handle_usage(self, event: dict[str, Any]) -> list[Action]:
        usage = obj(event.get("usage"))
        seconds = _number(usage.get("seconds"))
        if seconds is None or seconds <= self.session_seconds:
            return []  # USAGE_IS_CUMULATIVE: only a larger total is news
        self.session_seconds = seconds
        paused = _number(usage.get("paused_seconds"))  # PAUSED_SECONDS_AT_PAUSED_RATE
        split = min(paused, seconds) if paused is not None and paused >= 0 else None
        return [RecordSessionSeconds(seconds, split)]

    def handle_session_closed(self, event: dict[str, Any]) -> list[Action]:
        actions = self.handle_usage(event)
        reason = event.get("reason")
        message = f"GPT-Live session closed: {reason}"
        if reason in ("close_requested", "remote_hangup"):
            actions.append(Log("info", message))
        else:
            actions.append(Log("warning", message))
        return actions

    def handle_error(self, event: dict[str, Any]) -> list[Action]:
        err = obj(event.get("error"))
        code = err.get("code")
        message = f"GPT-Live error {err.get('type')}/{code}: {err.get('message')}"
        if err.get("client_event_id") == CLIP_EVENT_ID and self.clip_state == "playing":
            return [Log("warning", f"opening clip not played: {message}"),
                    *self._clip_over(played=False)]
        if code in {"invalid_api_key", "insufficient_quota"} or not self.state.realtime_ready:
            return [Log("error", message), EndCall("openai_error", message, apologise=True)]
        return [Log("warning", message)]

    # ----------------------------------------------------------------- client side

    def greet(self) -> list[Action]:
        """The opening clip if there is one, then (once it has played) the greeting, as
        commentary (:data:`~live_rules.SPOKEN_LINES_ARE_COMMENTARY`)."""
        if not self.state.realtime_ready or self.busy():
            return []
        return self._greet()

    def _greet(self) -> list[Action]:
        if self.clip_state == "due" and self.opening_clip is not None:
            return self._play_clip(self.opening_clip)
        if not self.greeting or self._greeted or self.clip_state == "playing":
            return []
        self._greeted = True
        return [SendToRealtime(commentary(self.greeting))]

    def say(
        self, instructions: str, *, queue: bool = False, reasoning_effort: str | None = None
    ) -> list[Action]:
        # GPT-Live has no per-response reasoning effort: the option is ignored here.
        if not self.state.realtime_ready:
            return []
        if queue:
            self.state.response_create_owed = True  # hold a hang-up until it is said
        return self._send_context(commentary(instructions))

    def _send_context(self, text: str) -> list[Action]:
        """Commentary or instructions: now, or after the clip (``HOLD_DURING_CLIP``)."""
        if self.clip_state == "playing":
            self._held.append(text)
            return []
        return [SendToRealtime(text)]

    # ----------------------------------------------------------------- the opening clip

    def _play_clip(self, clip: OpeningClip) -> list[Action]:
        self.clip_state = "playing"
        self._new_item()  # the clip's audio is an assistant turn of its own
        self._clip_item = self._live_item
        event = {"type": "session.output_audio.fixture.play", "audio": clip.audio,
                 "event_id": CLIP_EVENT_ID}
        return [Log("info", f"playing the opening clip {clip.name!r}"),
                SendToRealtime(dumps(event))]

    def _finish_clip_item(self) -> list[Action]:
        """The clip's audio is all sent: its turn is recorded once heard, with its words."""
        clip = self.opening_clip
        item = self.playback.items.get(self._clip_item or "")
        if self._live_item == self._clip_item:
            self._live_item = None
        if item is None or clip is None:
            return []
        if item.sent == 0:  # none of it was played: no turn
            item.recorded = True
            return []
        item.transcript = clip.text or f"[recorded clip: {clip.name}]"
        item.transcript_done = item.audio_done = True
        return self._maybe_record_item(item)

    def handle_fixture_played(self, event: dict[str, Any]) -> list[Action]:
        if event.get("client_event_id") != CLIP_EVENT_ID or self.clip_state != "playing":
            return []
        return self._clip_over(played=True)

    def _clip_over(self, *, played: bool) -> list[Action]:
        """The clip has drained (or failed): record it, tell the model, then the greeting."""
        clip = self.opening_clip
        assert clip is not None
        self.clip_state = "done"
        actions = self._finish_clip_item()
        if played and clip.text:  # CLIP_DESCRIBED_TO_MODEL
            said = f"[The caller has just heard this recorded message: {clip.text}]"
            actions.append(SendToRealtime(instructions_append(said)))
        held, self._held = self._held, []
        actions.extend(SendToRealtime(text) for text in held)
        if self.state.realtime_ready:  # the greeting follows the clip at once
            actions.extend(self._greet())
        return actions

    def _request_response(self) -> list[Action]:
        return []  # the model takes its turns itself

    def _flush_digits(self) -> list[Action]:
        if not self._digits or not self.state.realtime_ready:
            return []
        text = self.dtmf_template.format(digit="".join(self._digits))
        self._digits.clear()
        self._digits_due_ms = NEVER
        self.history.append(("dtmf", text))
        return self._send_context(instructions_append(text))

    def tool_results(self, results: list[ToolOutcome]) -> list[Action]:
        """Outputs back to the delegated model, then one ``response.create`` to continue it."""
        st = self.state
        st.tools_running = max(0, st.tools_running - len(results))
        actions: list[Action] = []
        for r in results:
            called_ms, item_id = self._known_calls.get(r.call_id, (st.now_ms, None))
            actions.append(RecordTurn(TranscriptTurn(
                role="tool", text=f"{r.name}({r.arguments}) → {r.error or r.output}",
                item_id=item_id, offset_ms=called_ms)))
            if r.call_id not in self._open_calls:
                actions.append(Log("warning", f"output of {r.name} ({r.call_id}) dropped: "
                                              "no GPT-Live session asked for it"))
                continue
            self._open_calls.discard(r.call_id)
            self.history.append(("function_call_output", dumps(
                {"call_id": r.call_id, "output": r.output})))
            item = {"type": "function_call_output", "call_id": r.call_id, "output": r.output}
            actions.append(SendToRealtime(dumps({"type": "response.item.create", "item": item})))
        if st.tools_running == 0 and any(isinstance(a, SendToRealtime) for a in actions):
            actions.append(SendToRealtime(RESPONSE_CREATE))
        actions.extend(self._maybe_hang_up())
        return actions

    def realtime_lost(self) -> list[Action]:
        """The session dropped: its open turns are final now (they go into the history the
        new ``session.start`` carries), then as :meth:`CallSession.realtime_lost`."""
        actions: list[Action] = []
        for turn in self.turns.flush():
            actions.extend(self._record(turn))
        if self.clip_state == "playing":  # cut short: not replayed on the new session
            self.clip_state = "done"
            self._held.clear()
            actions.extend(self._finish_clip_item())
        actions.extend(super().realtime_lost())
        self._live_item = None
        return actions

    def finish(self) -> list[Action]:
        actions: list[Action] = []
        for turn in self.turns.flush():
            actions.extend(self._record(turn))
        actions.extend(super().finish())
        return actions


def commentary(content: str) -> str:
    return dumps({"type": "session.commentary.append", "content": content, "delegation_id": None})


def instructions_append(content: str) -> str:
    return dumps(
        {"type": "session.instructions.append", "content": content, "delegation_id": None})


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a JSON number (None otherwise)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if ok else None


def _ms(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


#: GPT-Live server event ``type`` → handler. Only these names are ever dispatched.
LIVE_HANDLERS: dict[str, LiveHandler] = {
    "session.started": LiveCallSession.handle_session_started,
    "session.input_transcript.delta": LiveCallSession.handle_input_transcript,
    "session.output_transcript.delta": LiveCallSession.handle_output_transcript,
    "session.delegation.created": LiveCallSession.handle_delegation_created,
    "response.event": LiveCallSession.handle_response_event,
    "session.usage.updated": LiveCallSession.handle_usage,
    "session.output_audio.fixture.played": LiveCallSession.handle_fixture_played,
    "session.closed": LiveCallSession.handle_session_closed,
    "error": LiveCallSession.handle_error,
}
