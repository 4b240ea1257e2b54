""":class:`CallSession`: the glue of the call core.

It is fed one input at a time (a Twilio text frame or message, a Realtime event, a tool's
output, a control request) and returns the actions to run. It never awaits, reads a clock or
touches a database; call time comes from Twilio's ``media.timestamp``.

Twilio messages and Realtime events are dispatched through two separate tables
(:data:`TWILIO_HANDLERS`, :data:`REALTIME_HANDLERS`): a name that is not in the peer's own table
is an unknown input, whatever it looks like.

Two inputs take a fast path with no object per frame: caller audio (:meth:`receive_twilio` and
:meth:`twilio_media`) and assistant audio (:meth:`realtime_audio_delta`). Both pass the base64
string through untouched.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from voiceconv.events import TranscriptTurn
from voiceconv.session import messages as msgs
from voiceconv.session.actions import (
    Action,
    ApologyHeard,
    CloseStream,
    EndCall,
    Log,
    RecordMilestone,
    RecordTurn,
    SendToRealtime,
    StartStream,
    ToolCall,
)
from voiceconv.session.control import RESPONSE_CREATE, Control
from voiceconv.session.limits import NEVER, LimitClock, Limits
from voiceconv.session.messages import BadInput, dumps
from voiceconv.session.playback import AssistantItem, Playback, estimate_heard
from voiceconv.session.realtime_side import REALTIME_HANDLERS, RealtimeSide
from voiceconv.session.state import CallState
from voiceconv.session.timing import TurnTimer

__all__ = ["REALTIME_HANDLERS", "TWILIO_HANDLERS", "CallSession"]

TwilioHandler = Callable[["CallSession", dict[str, Any]], list[Action]]


class CallSession(Control, RealtimeSide):
    """The protocol of one call: Twilio messages and Realtime events in, actions out."""

    #: How caller audio starts on the speech backend's wire (the payload and ``"}`` follow).
    append_prefix: str = msgs.APPEND_PREFIX

    def __init__(
        self,
        *,
        greeting: str = "",
        instructions: str = "",
        forward_dtmf: bool = True,
        dtmf_template: str = "[The caller pressed the key {digit} on their phone keypad.]",
        early_audio_frames: int = 250,
        interrupt_response: bool = True,
        limits: Limits | None = None,
        transcription: bool = True,
        dtmf_pause_ms: int = 0,
        auto_response: bool = True,
        greeting_reasoning_effort: str | None = None,
        server_idle_timeout: bool = False,
    ) -> None:
        self.state = CallState()
        #: Caller and assistant audio pass through this core (False: :meth:`begin_without_media`).
        self.media = True
        self._digits: list[str] = []
        self._digits_due_ms = NEVER
        #: Bad Twilio input of this call, counted by kind (each kind is logged once).
        self.bad_input: dict[str, int] = {}
        self._early: deque[str] = deque(maxlen=1)
        #: Buffered caller audio is being sent: live frames queue behind it (in order).
        self._flushing = False
        self.configure(
            greeting=greeting,
            instructions=instructions,
            forward_dtmf=forward_dtmf,
            dtmf_template=dtmf_template,
            early_audio_frames=early_audio_frames,
            interrupt_response=interrupt_response,
            limits=limits,
            transcription=transcription,
            dtmf_pause_ms=dtmf_pause_ms,
            auto_response=auto_response,
            greeting_reasoning_effort=greeting_reasoning_effort,
            server_idle_timeout=server_idle_timeout,
        )
        #: Caller items committed whose transcript has not arrived yet.
        self.pending_transcripts: set[str] = set()
        # Media fast path: prebuilt message prefixes (set at start).
        self._media_prefix = ""
        self._mark_prefix = ""
        # Input clock (Realtime buffer ms) → call time: call ms of the first forwarded frame.
        self._input_origin_ms: int | None = None
        self.playback = Playback()
        self._muted_responses: set[str] = set()
        self._muted_items: set[str] = set()
        # Turn timing (call clock here; the I/O layer's clock through ``stamp``)
        self._speech_start_ms: dict[str, int] = {}
        self._last_speech_stop_ms: int | None = None
        self.timer = TurnTimer()
        self._began: AssistantItem | None = None
        self._first_audio_recorded = False
        self._first_echo_recorded = False
        # Function calls asked for by the current Realtime session (outputs go only to these)
        self._open_calls: set[str] = set()
        # Items of an earlier Realtime session (after a reconnect): never truncated
        self._stale_items: set[str] = set()
        #: The conversation so far, as (role, text), for re-seeding a new Realtime session;
        #: ``function_call`` and ``function_call_output`` entries carry their item as JSON.
        self.history: deque[tuple[str, str]] = deque(maxlen=200)
        self._greeted = False
        #: Keep the greeting back when the session is ready (an outbound call waiting for the
        #: callee's first words or the answering-machine verdict); :meth:`greet` says it.
        self.hold_greeting = False
        self._reconnecting = False
        #: The caller's last turn was committed and no answer has started yet (cleared when an
        #: assistant item is added); a drop then leaves it to the new session.
        self._turn_unanswered = False
        #: ``response.create`` texts owed once the active response is done, in order.
        self._queued: deque[str] = deque()
        self._last_request = ""
        #: The last request sent may wait behind an active response (see ``Control._create``).
        self._last_request_queued = False
        #: Function calls asked for and not answered yet (by call id).
        self._running: dict[str, ToolCall] = {}
        #: Function calls of this call → (call time asked, function_call item id); their
        #: outputs are accepted after a reconnect too.
        self._known_calls: dict[str, tuple[int, str | None]] = {}

    def configure(
        self,
        *,
        greeting: str = "",
        instructions: str = "",
        forward_dtmf: bool = True,
        dtmf_template: str = "[The caller pressed the key {digit} on their phone keypad.]",
        early_audio_frames: int = 250,
        interrupt_response: bool = True,
        limits: Limits | None = None,
        transcription: bool = True,
        dtmf_pause_ms: int = 0,
        auto_response: bool = True,
        greeting_reasoning_effort: str | None = None,
        server_idle_timeout: bool = False,
    ) -> None:
        """Set the call's options (the consumer knows them once the call is claimed).

        ``dtmf_pause_ms``: key presses reach the model together once the caller has pressed
        nothing for this long (0: each key at once). ``auto_response``: the server answers the
        caller's turns itself (``create_response``); when it does not, the core asks for the
        response once server VAD has committed the turn. ``greeting_reasoning_effort``: the
        greeting's response gets this ``reasoning.effort`` (reasoning models only).
        ``server_idle_timeout``: server VAD has ``idle_timeout_ms``, so the server reprompts a
        silent caller (``input_audio_buffer.timeout_triggered``) and the core does not; the
        core still hangs up on a caller who stays silent after that reprompt.
        """
        self.dtmf_pause_ms = dtmf_pause_ms
        self.greeting_reasoning_effort = greeting_reasoning_effort
        self.server_idle_timeout = server_idle_timeout
        self._idle_items: set[str] = set()
        if server_idle_timeout and limits is not None:
            limits = replace(limits, idle_reprompt_ms=0)
        self.auto_response = auto_response
        self.greeting = greeting
        self.instructions = instructions
        self.forward_dtmf = forward_dtmf
        self.dtmf_template = dtmf_template
        self.interrupt_response = interrupt_response
        self.transcription = transcription
        self.limits = limits or Limits()
        self.clock = LimitClock(self.limits)
        early = list(self._early)
        self._early = deque(early, maxlen=max(1, early_audio_frames))
        self.deadline_ms = self.clock.next_deadline()

    # ----------------------------------------------------------------- bad input

    def refuse(self, kind: str, detail: str) -> list[Action]:
        """Count bad input of ``kind``; the first of each kind is logged."""
        n = self.bad_input.get(kind, 0) + 1
        self.bad_input[kind] = n
        if n == 1:
            return [Log("warning", f"bad input from Twilio ({kind}): {detail}; ignored")]
        return []

    # ----------------------------------------------------------------- fast paths

    def receive_twilio(self, text: str) -> str | list[Action]:
        """One Twilio text frame, validated here.

        A good ``media`` frame returns the ``input_audio_buffer.append`` text to send (``""``
        while audio is buffered), unless a limit fell due (then a list of actions, the append
        first). Anything else returns the actions to run.
        """
        try:
            msg = msgs.parse_twilio(text)
        except BadInput as bad:
            return self.refuse(bad.kind, bad.detail)
        if msg["event"] != "media":
            return self.handle_twilio(msg)
        st = self.state
        try:
            if not st.started:
                raise BadInput("media before start", "media arrived before start")
            payload, timestamp = msgs.media_fields(msg)
            msgs.check_stream_sid(msg, st.stream_sid, required=True)
        except BadInput as bad:
            return self.refuse(bad.kind, bad.detail)
        out = self.twilio_media(payload, timestamp)
        if out is None and self._early and st.realtime_ready and not self._flushing:
            actions: list[Action] = self._drain_early()  # audio buffered behind the flush
        elif timestamp < self.deadline_ms:
            return out or ""
        else:
            actions = [SendToRealtime(out)] if out else []
        if timestamp >= self.deadline_ms:
            actions.extend(self.on_clock())
        return actions

    def twilio_media(self, payload: str, timestamp: int) -> str | None:
        """A caller frame: return the ``input_audio_buffer.append`` text, or None if buffered."""
        st = self.state
        st.now_ms = timestamp
        st.frames_in += 1
        if st.realtime_ready and not self._flushing and not self._early:
            if self._input_origin_ms is None:
                self._input_origin_ms = timestamp
            return self.append_prefix + payload + '"}'
        if len(self._early) == self._early.maxlen:
            st.frames_dropped_early += 1
        self._early.append(payload)
        return None

    def requeue_audio(self, payload: str) -> None:
        """A caller frame could not be sent (the connection is going): keep it for the next one
        (the frames after it queue behind it)."""
        if payload.startswith(self.append_prefix):
            payload = payload[len(self.append_prefix) : -2]
        if len(self._early) == self._early.maxlen:
            self.state.frames_dropped_early += 1
        self._early.append(payload)

    # ----------------------------------------------------------------- Twilio side

    def handle_twilio(self, msg: dict[str, Any]) -> list[Action]:
        """A parsed Twilio message (``media`` included, without the fast path)."""
        if not isinstance(msg, dict):
            return self.refuse("not an object", "a Twilio message that is not an object")
        try:
            event = msgs.check_event(msg.get("event"))
            if event not in ("connected", "start"):
                if not self.state.started:
                    raise BadInput(
                        "media before start" if event == "media" else "before start",
                        f"{event!r} before start",
                    )
                msgs.check_stream_sid(msg, self.state.stream_sid, required=event == "media")
        except BadInput as bad:
            return self.refuse(bad.kind, bad.detail)
        return TWILIO_HANDLERS[event](self, msg)

    def handle_twilio_connected(self, msg: dict[str, Any]) -> list[Action]:
        return []

    def handle_twilio_media(self, msg: dict[str, Any]) -> list[Action]:
        try:
            payload, timestamp = msgs.media_fields(msg)
        except BadInput as bad:
            return self.refuse(bad.kind, bad.detail)
        out = self.twilio_media(payload, timestamp)
        st = self.state
        if out is None and self._early and st.realtime_ready and not self._flushing:
            actions: list[Action] = self._drain_early()  # audio buffered behind the flush
        else:
            actions = [SendToRealtime(out)] if out else []
        if timestamp >= self.deadline_ms:
            actions.extend(self.on_clock())
        return actions

    def handle_twilio_start(self, msg: dict[str, Any]) -> list[Action]:
        st = self.state
        if st.started:
            return self.refuse("second start", "a second start message")
        try:
            start = msgs.parse_start(msg)
        except BadInput as bad:
            return [Log("warning", f"{bad.detail}: closing the stream"), CloseStream()]
        st.stream_sid = start.stream_sid
        st.call_sid = start.call_sid
        st.account_sid = start.account_sid
        st.custom_parameters = dict(start.custom_parameters)
        st.started = True
        self._media_prefix = msgs.media_prefix(start.stream_sid)
        self._mark_prefix = msgs.mark_prefix(start.stream_sid)
        return [StartStream(start)]

    # ----------------------------------------------------------------- no media (SIP)

    def begin_without_media(
        self, call_sid: str, custom_parameters: dict[str, str] | None = None
    ) -> None:
        """Start a call whose audio never reaches us (OpenAI's SIP path, a sideband socket).

        The call is started without a Twilio ``start``: there is no stream to play to, so
        nothing is ever sent to Twilio, no marks are kept (the service plays audio and
        truncates interrupted answers itself) and call time arrives through :meth:`tick`.
        Everything else (turns, tools, transcripts, hang-up and transfer rules) is the same.
        """
        st = self.state
        st.call_sid = call_sid
        st.custom_parameters = dict(custom_parameters or {})
        st.started = True
        self.media = False

    def tick(self, now_ms: int) -> list[Action]:
        """Call time without media frames (ms since the call started): limits and key presses."""
        st = self.state
        st.now_ms = max(st.now_ms, now_ms)
        if st.now_ms < self.deadline_ms:
            return []
        return self.on_clock()

    def handle_twilio_mark(self, msg: dict[str, Any]) -> list[Action]:
        mark = msg.get("mark")
        name: Any = mark.get("name") if isinstance(mark, dict) else None
        if name == msgs.APOLOGY_MARK:
            return [ApologyHeard()]
        try:
            seq = int(name)
        except (TypeError, ValueError, OverflowError):
            return [Log("debug", f"unrecognised mark {name!r} ignored")]
        return self.mark_echo(seq)

    def mark_echo(self, seq: int) -> list[Action]:
        """Twilio echoed mark ``seq``: the audio before it has played."""
        now = self.state.now_ms
        done = self.playback.echo(seq, now)
        if done is None:
            return []
        self.clock.last_activity_ms = now
        actions: list[Action] = []
        if not self._first_echo_recorded:
            self._first_echo_recorded = True
            actions.append(RecordMilestone("first_audio_heard"))
        for item in done:
            actions.extend(self._maybe_record_item(item))
        actions.extend(self._maybe_hang_up())
        return actions

    def handle_twilio_dtmf(self, msg: dict[str, Any]) -> list[Action]:
        dtmf = msg.get("dtmf")
        digit = str(dtmf.get("digit", ""))[:8] if isinstance(dtmf, dict) else ""
        if not digit:
            return [Log("debug", "dtmf without a digit ignored")]
        now = self.state.now_ms
        self.clock.activity(now)
        actions: list[Action] = [RecordTurn(TranscriptTurn(role="dtmf", text=digit, offset_ms=now))]
        if not self.forward_dtmf:
            return actions
        self._digits.append(digit)
        if self.dtmf_pause_ms <= 0:
            actions.extend(self._flush_digits())
        else:
            # The model hears the keys together, once the caller pauses (a PIN, a menu choice).
            self._digits_due_ms = now + self.dtmf_pause_ms
            self.deadline_ms = min(self.deadline_ms, self._digits_due_ms)
        return actions

    def _flush_digits(self) -> list[Action]:
        if not self._digits or not self.state.realtime_ready:
            return []
        text = self.dtmf_template.format(digit="".join(self._digits))
        self._digits.clear()
        self._digits_due_ms = NEVER
        self.history.append(("user", text))
        actions: list[Action] = [SendToRealtime(dumps(msgs.user_text_item(text)))]
        actions.extend(self._request_response())
        return actions

    def handle_twilio_stop(self, msg: dict[str, Any]) -> list[Action]:
        st = self.state
        if st.ended and st.transfer_target is not None:
            return [EndCall("transferred")]  # Twilio ends the stream as it dials the target
        return [EndCall("caller_hung_up")]

    # ----------------------------------------------------------------- limits

    def on_clock(self) -> list[Action]:
        """Call time reached :attr:`deadline_ms`: key presses, call-length and idle limits."""
        st = self.state
        clock = self.clock
        lim = self.limits
        now = st.now_ms
        actions: list[Action] = []
        if self._digits and now >= self._digits_due_ms:
            actions.extend(self._flush_digits())
        if st.ended or st.hangup_reason is not None or not st.realtime_ready:
            self.deadline_ms = NEVER if st.ended or st.hangup_reason else now + 1000
            return actions
        if clock.warning_due(now):
            clock.limit_stage = 1
            actions.append(Log("info", "call nears its maximum length: warning the caller"))
            actions.extend(self.say(lim.warning_instructions, queue=True))
        if clock.end_due(now):
            clock.limit_stage = 2
            actions.append(Log("info", "call reached its maximum length: ending it"))
            actions.extend(self.say(lim.goodbye_instructions, queue=True))
            actions.extend(self.request_hangup("limit"))
            self.deadline_ms = NEVER
            return actions
        if self.busy() or st.caller_speaking:
            # A caller who is talking is never idle; idle time counts from when both went quiet.
            clock.last_activity_ms = now
        elif clock.reprompt_due(now):
            clock.idle_stage = 1
            clock.last_activity_ms = now
            actions.append(Log("info", "caller silent: reprompting"))
            actions.extend(self.say(lim.reprompt_instructions))
        elif clock.idle_end_due(now):
            actions.append(Log("info", "caller still silent: ending the call"))
            actions.extend(self.say(lim.goodbye_instructions, queue=True))
            actions.extend(self.request_hangup("idle"))
            self.deadline_ms = NEVER
            return actions
        self.deadline_ms = max(now + 20, min(clock.next_deadline(), self._digits_due_ms))
        return actions

    # ----------------------------------------------------------------- reconnecting

    def realtime_lost(self) -> list[Action]:
        """The Realtime connection dropped: buffer caller audio until a new session is ready.

        Audio already queued at Twilio keeps playing and its marks keep counting; items of the
        old session are never truncated in the new one. An answer still playing goes into the
        history as heard so far (its unheard tail left out), so the new session knows it.
        """
        st = self.state
        st.realtime_ready = False
        self.pending_transcripts.clear()
        st.response_active = False
        st.active_response_id = None
        st.caller_speaking = False
        now = st.now_ms
        for item in self.playback.items.values():
            if item.recorded or item.reseeded or not item.transcript or not item.sent:
                continue
            heard_ms = self.playback.heard_bytes(item, now) // 8
            heard = estimate_heard(item.transcript, heard_ms, item.sent // 8)
            item.reseeded = True
            if heard:
                self.history.append(("assistant", heard))
        # Plain requests are decided afresh on the new session; spoken lines stay owed.
        self._queued = deque(q for q in self._queued if q != RESPONSE_CREATE)
        st.response_create_owed = bool(self._queued)
        self._last_request = ""
        self._stale_items.update(self.playback.items)
        self._open_calls.clear()
        self._input_origin_ms = None
        self._last_speech_stop_ms = None
        self.timer.reset()
        self._flushing = False
        self._reconnecting = True
        return []

    # ----------------------------------------------------------------- end of call

    def finish(self) -> list[Action]:
        """The call is over: record every assistant turn not yet recorded, as heard so far,
        and every function call still running, as ``cancelled``."""
        self.playback.settle(self.state.now_ms)
        actions: list[Action] = self.tools_ended(self.cancelled_tools())
        for item in self.playback.items.values():
            item.audio_done = item.transcript_done = True
            actions.extend(self._maybe_record_item(item))
        return actions

#: Twilio message ``event`` → handler. Only these names are ever dispatched from Twilio.
TWILIO_HANDLERS: dict[str, TwilioHandler] = {
    "connected": CallSession.handle_twilio_connected,
    "start": CallSession.handle_twilio_start,
    "media": CallSession.handle_twilio_media,
    "mark": CallSession.handle_twilio_mark,
    "dtmf": CallSession.handle_twilio_dtmf,
    "stop": CallSession.handle_twilio_stop,
}
