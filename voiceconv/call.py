"""The sans-I/O call core.

:class:`CallSession` holds the whole protocol of one phone call between Twilio Media Streams
and the OpenAI Realtime API. It is fed one parsed input at a time (a Twilio message or a
Realtime event) and returns what to do: JSON text to send to either side and records that
leave the audio path. It never awaits, reads a clock or touches a database; call time comes
from Twilio's ``media.timestamp`` (the only clock used for call-time arithmetic).

Two inputs take a fast path with no object per frame: caller audio
(:meth:`CallSession.twilio_media`) and assistant audio (:meth:`CallSession.realtime_audio_delta`).
Both pass the base64 string through untouched.

Barge-in follows the mark bookkeeping of ``protocols.md`` B5: every assistant audio chunk sent
to Twilio is followed by a uniquely numbered ``mark``; an echo proves the audio before it was
played. On ``input_audio_buffer.speech_started`` while audio is still queued at Twilio, the
session sends ``clear`` and truncates the item being heard at the milliseconds actually played
(refined by call time since the last echo, capped by the next mark), mutes in-flight audio of
the interrupted response, and ignores the echoes that ``clear`` flushes.
"""

from __future__ import annotations

import json
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from voiceconv.events import TranscriptTurn, Usage

# --------------------------------------------------------------------------------------
# Actions: what the I/O layer must do. Small frozen dataclasses named imperatively.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendToTwilio:
    text: str
    type: Literal["send_to_twilio"] = "send_to_twilio"


@dataclass(frozen=True, slots=True)
class SendToRealtime:
    text: str
    type: Literal["send_to_realtime"] = "send_to_realtime"


@dataclass(frozen=True, slots=True)
class RecordTurn:
    turn: TranscriptTurn
    type: Literal["record_turn"] = "record_turn"


@dataclass(frozen=True, slots=True)
class RecordUsage:
    usage: Usage
    type: Literal["record_usage"] = "record_usage"


@dataclass(frozen=True, slots=True)
class RecordFirstAudio:
    call_ms: int
    type: Literal["record_first_audio"] = "record_first_audio"


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One ``function_call`` item the model asked for."""

    call_id: str
    name: str
    arguments: str
    item_id: str | None = None


@dataclass(frozen=True, slots=True)
class RunTools:
    calls: tuple[ToolCall, ...]
    type: Literal["run_tools"] = "run_tools"


@dataclass(frozen=True, slots=True)
class StartRealtime:
    """The stream has started: open (or use) the Realtime connection."""

    type: Literal["start_realtime"] = "start_realtime"


@dataclass(frozen=True, slots=True)
class HangUp:
    reason: str
    type: Literal["hang_up"] = "hang_up"


@dataclass(frozen=True, slots=True)
class Transfer:
    target: str
    type: Literal["transfer"] = "transfer"


@dataclass(frozen=True, slots=True)
class EndCall:
    """The call is over (the peer ended it); tear down and finalise."""

    reason: str
    error: str = ""
    type: Literal["end_call"] = "end_call"


@dataclass(frozen=True, slots=True)
class Log:
    level: Literal["debug", "info", "warning", "error"]
    message: str
    type: Literal["log"] = "log"


Action = (
    SendToTwilio
    | SendToRealtime
    | RecordTurn
    | RecordUsage
    | RecordFirstAudio
    | RunTools
    | StartRealtime
    | HangUp
    | Transfer
    | EndCall
    | Log
)

#: Realtime error codes that are harmless when they happen (logged at debug).
BENIGN_ERROR_CODES = frozenset(
    {
        "conversation_already_has_active_response",
        "response_cancel_not_active",
        "input_audio_buffer_commit_empty",
    }
)


def b64_decoded_len(b64: str) -> int:
    """Length in bytes of the data a base64 string encodes, without decoding it."""
    n = len(b64)
    if n == 0:
        return 0
    pad = 2 if b64.endswith("==") else 1 if b64.endswith("=") else 0
    return max(0, (n * 3) // 4 - pad)


def _obj(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one (peers send what they send)."""
    return value if isinstance(value, dict) else {}


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


NEVER = 2**62


@dataclass(frozen=True, slots=True)
class Limits:
    """Call-length and idle-caller limits, in milliseconds of call time (0 = off)."""

    max_call_ms: int = 0
    warning_ms: int = 60_000
    idle_reprompt_ms: int = 0
    idle_hangup_ms: int = 0
    warning_instructions: str = (
        "Tell the caller briefly and politely that the call will have to end in about a "
        "minute, and help them finish."
    )
    goodbye_instructions: str = (
        "Tell the caller politely that you have to end the call now, and say goodbye."
    )
    reprompt_instructions: str = "The caller has been silent. Ask briefly if they are still there."


# --------------------------------------------------------------------------------------
# Playback bookkeeping
# --------------------------------------------------------------------------------------


@dataclass(slots=True)
class AssistantItem:
    """An assistant audio item and what of it has been sent and played."""

    item_id: str
    response_id: str
    #: Bytes of μ-law sent to Twilio (8 bytes = 1 ms).
    sent: int = 0
    #: Bytes proven played by mark echoes.
    acked: int = 0
    #: Call time (ms) at which ``acked`` last advanced, or playback of this item began.
    acked_at_ms: int | None = None
    #: Call time of the first chunk sent.
    first_sent_ms: int | None = None
    transcript: str = ""
    transcript_done: bool = False
    audio_done: bool = False
    interrupted: bool = False
    heard_ms: int | None = None
    recorded: bool = False
    latency_ms: int | None = None
    #: Deltas dropped after an interruption (audio the caller never got).
    dropped: bool = False
    truncated: bool = False


@dataclass(slots=True)
class _Pending:
    seq: int
    item: AssistantItem
    end: int  # item bytes sent up to this mark


@dataclass(slots=True)
class CallState:
    """Everything about the call the core keeps. Public for inspection in tests."""

    stream_sid: str = ""
    call_sid: str = ""
    account_sid: str = ""
    custom_parameters: dict[str, str] = field(default_factory=dict)
    started: bool = False
    ended: bool = False
    #: Last inbound ``media.timestamp`` (call time, ms).
    now_ms: int = 0
    realtime_ready: bool = False
    response_active: bool = False
    active_response_id: str | None = None
    #: A ``response.create`` is owed once the active response is done.
    response_create_owed: bool = False
    tools_running: int = 0
    hangup_reason: str | None = None
    transfer_target: str | None = None
    frames_in: int = 0
    frames_out: int = 0
    frames_dropped_early: int = 0


class CallSession:
    """The protocol of one call: Twilio messages and Realtime events in, actions out."""

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
    ) -> None:
        self.greeting = greeting
        self.transcription = transcription
        #: Caller items committed whose transcript has not arrived yet.
        self.pending_transcripts: set[str] = set()
        self.limits = limits or Limits()
        self.instructions = instructions
        self.forward_dtmf = forward_dtmf
        self.dtmf_template = dtmf_template
        self.interrupt_response = interrupt_response
        self.state = CallState()
        # Media fast path: prebuilt message prefixes (set at start).
        self._media_prefix = ""
        self._mark_prefix = ""
        self._early: deque[str] = deque(maxlen=max(1, early_audio_frames))
        # Input clock (Realtime buffer ms) → call time: call ms of the first forwarded frame.
        self._input_origin_ms: int | None = None
        # Playback
        self._seq = 0
        self._pending: deque[_Pending] = deque()
        self._items: dict[str, AssistantItem] = {}
        self._muted_responses: set[str] = set()
        self._muted_items: set[str] = set()
        # Turn timing
        self._speech_start_ms: dict[str, int] = {}
        self._last_speech_stop_ms: int | None = None
        self._first_audio_recorded = False
        # Function calls asked for by the current Realtime session (outputs go only to these)
        self._open_calls: set[str] = set()
        # Items of an earlier Realtime session (after a reconnect): never truncated
        self._stale_items: set[str] = set()
        #: The conversation so far, as (role, text), for re-seeding a new Realtime session.
        self.history: deque[tuple[str, str]] = deque(maxlen=100)
        self._greeted = False
        # Limits, in call time: the next moment on_clock() has work to do.
        self._last_activity_ms = 0
        self._idle_stage = 0
        self._limit_stage = 0
        self.deadline_ms = self._next_deadline()

    # ----------------------------------------------------------------- fast paths

    def twilio_media(self, payload: str, timestamp: int) -> str | None:
        """A caller frame: return the ``input_audio_buffer.append`` text, or None if buffered."""
        st = self.state
        st.now_ms = timestamp
        st.frames_in += 1
        if st.realtime_ready:
            if self._input_origin_ms is None:
                self._input_origin_ms = timestamp
            return '{"type":"input_audio_buffer.append","audio":"' + payload + '"}'
        if len(self._early) == self._early.maxlen:
            st.frames_dropped_early += 1
        self._early.append(payload)
        return None

    def requeue_audio(self, payload: str) -> None:
        """A caller frame could not be sent (the connection is going): keep it for the next one."""
        if len(self._early) == self._early.maxlen:
            self.state.frames_dropped_early += 1
        self._early.append(payload)

    def realtime_audio_delta(
        self, item_id: str, response_id: str, delta: str
    ) -> tuple[str, str] | None:
        """An assistant audio chunk: return (Twilio media text, Twilio mark text), or None."""
        if response_id in self._muted_responses or item_id in self._muted_items:
            item = self._items.get(item_id)
            if item is not None and not item.dropped:
                item.dropped = True
            return None
        item = self._items.get(item_id)
        if item is None:
            item = AssistantItem(item_id=item_id, response_id=response_id)
            self._items[item_id] = item
        st = self.state
        if item.first_sent_ms is None:
            item.first_sent_ms = st.now_ms
        if not self._pending:
            # Playback of this chunk starts now (nothing queued ahead of it).
            item.acked_at_ms = st.now_ms
        item.sent += b64_decoded_len(delta)
        self._seq += 1
        self._pending.append(_Pending(self._seq, item, item.sent))
        st.frames_out += 1
        return (
            self._media_prefix + delta + '"}}',
            self._mark_prefix + str(self._seq) + '"}}',
        )

    # ----------------------------------------------------------------- Twilio side

    def handle_twilio(self, msg: dict[str, Any]) -> list[Action]:
        """A parsed Twilio message other than ``media`` (which takes :meth:`twilio_media`)."""
        if not isinstance(msg, dict):
            return [Log("warning", "Twilio message that is not an object ignored")]
        event = msg.get("event")
        if event == "media":
            media = _obj(msg.get("media"))
            try:
                timestamp = int(media.get("timestamp", 0))
            except (TypeError, ValueError, OverflowError):
                return [Log("warning", "media with a bad timestamp ignored")]
            out = self.twilio_media(str(media.get("payload", "")), timestamp)
            return [SendToRealtime(out)] if out else []
        handler = getattr(self, f"handle_twilio_{event}", None) if isinstance(event, str) else None
        if handler is None:
            return [Log("warning", f"unknown Twilio event {event!r} ignored")]
        result: list[Action] = handler(msg)
        return result

    def handle_twilio_connected(self, msg: dict[str, Any]) -> list[Action]:
        return []

    def handle_twilio_start(self, msg: dict[str, Any]) -> list[Action]:
        st = self.state
        if st.started:
            return [Log("warning", "second start message ignored")]
        start = msg.get("start")
        start = start if isinstance(start, dict) else {}
        sid = str(msg.get("streamSid") or start.get("streamSid") or "")
        st.stream_sid = sid
        st.call_sid = str(start.get("callSid") or "")
        st.account_sid = str(start.get("accountSid") or "")
        params = _obj(start.get("customParameters"))
        st.custom_parameters = {str(k): str(v) for k, v in params.items()}
        st.started = True
        sid_json = json.dumps(sid)
        self._media_prefix = '{"event":"media","streamSid":' + sid_json + ',"media":{"payload":"'
        self._mark_prefix = '{"event":"mark","streamSid":' + sid_json + ',"mark":{"name":"'
        return [StartRealtime()]

    def handle_twilio_mark(self, msg: dict[str, Any]) -> list[Action]:
        mark = msg.get("mark")
        name: Any = mark.get("name") if isinstance(mark, dict) else None
        try:
            seq = int(name)
        except (TypeError, ValueError, OverflowError):
            return [Log("debug", f"unrecognised mark {name!r} ignored")]
        return self.mark_echo(seq)

    def mark_echo(self, seq: int) -> list[Action]:
        """Twilio echoed mark ``seq``: the audio before it has played."""
        pending = self._pending
        if not pending or seq < pending[0].seq:
            return []  # an echo flushed by clear, or a duplicate
        now = self.state.now_ms
        done_items: list[AssistantItem] = []
        while pending and pending[0].seq <= seq:
            p = pending.popleft()
            item = p.item
            item.acked = p.end
            item.acked_at_ms = now
            if not pending or pending[0].item is not item:
                done_items.append(item)
        self._last_activity_ms = now
        if pending:
            nxt = pending[0].item
            if nxt.acked == 0:
                nxt.acked_at_ms = now
        actions: list[Action] = []
        for item in done_items:
            actions.extend(self._maybe_record_item(item))
        actions.extend(self._maybe_hang_up())
        return actions

    def handle_twilio_dtmf(self, msg: dict[str, Any]) -> list[Action]:
        dtmf = msg.get("dtmf")
        digit = str(dtmf.get("digit", ""))[:8] if isinstance(dtmf, dict) else ""
        if not digit:
            return [Log("debug", "dtmf without a digit ignored")]
        self._active()
        actions: list[Action] = [
            RecordTurn(TranscriptTurn(role="dtmf", text=digit, offset_ms=self.state.now_ms))
        ]
        if self.forward_dtmf and digit and self.state.realtime_ready:
            text = self.dtmf_template.format(digit=digit)
            self.history.append(("user", text))
            actions.append(SendToRealtime(dumps(user_text_item(text))))
            actions.extend(self._request_response())
        return actions

    def handle_twilio_stop(self, msg: dict[str, Any]) -> list[Action]:
        return [EndCall("caller_hung_up")]

    # ----------------------------------------------------------------- Realtime side

    def handle_realtime(self, event: dict[str, Any]) -> list[Action]:
        """A parsed Realtime server event other than ``response.output_audio.delta``."""
        if not isinstance(event, dict):
            return [Log("warning", "Realtime event that is not an object ignored")]
        etype = event.get("type")
        if etype == "response.output_audio.delta":
            out = self.realtime_audio_delta(
                str(event.get("item_id", "")),
                str(event.get("response_id", "")),
                str(event.get("delta", "")),
            )
            return self._delta_actions(out)
        if not isinstance(etype, str):
            return [Log("warning", "Realtime event without a type ignored")]
        handler = getattr(self, "handle_" + etype.replace(".", "_"), None)
        if handler is None:
            return []
        result: list[Action] = handler(event)
        return result

    def _delta_actions(self, out: tuple[str, str] | None) -> list[Action]:
        if out is None:
            return []
        actions: list[Action] = [SendToTwilio(out[0]), SendToTwilio(out[1])]
        actions.extend(self.after_delta())
        return actions

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
            # Attribute it to the item just sent.
            if self._pending:
                self._pending[-1].item.latency_ms = latency
        return actions

    def handle_session_updated(self, event: dict[str, Any]) -> list[Action]:
        st = self.state
        if st.realtime_ready:
            return []
        st.realtime_ready = True
        actions: list[Action] = []
        if self._early:
            self._input_origin_ms = st.now_ms - 20 * (len(self._early) - 1)
        for payload in self._early:
            actions.append(
                SendToRealtime('{"type":"input_audio_buffer.append","audio":"' + payload + '"}')
            )
        self._early.clear()
        if self.greeting and not self._greeted:
            self._greeted = True
            instructions = self.greeting
            if self.instructions:
                instructions = self.instructions + "\n\n" + self.greeting
            actions.append(
                SendToRealtime(
                    dumps({"type": "response.create", "response": {"instructions": instructions}})
                )
            )
            st.response_active = True  # owed: the server will answer with response.created
        return actions

    def handle_error(self, event: dict[str, Any]) -> list[Action]:
        err = _obj(event.get("error"))
        code = err.get("code")
        code = code if isinstance(code, str) else None
        message = f"Realtime error {err.get('type')}/{code}: {err.get('message')}"
        if code in BENIGN_ERROR_CODES:
            return [Log("debug", message)]
        if code == "session_expired":
            # The server closes the socket next; the bridge opens a new session and re-seeds it.
            return [Log("warning", message)]
        if code in {"invalid_api_key", "insufficient_quota"}:
            return [Log("error", message), EndCall("openai_error", message)]
        if code == "unknown_parameter" and not self.state.realtime_ready:
            return [Log("error", message), EndCall("openai_error", message)]
        return [Log("warning", message)]

    def handle_input_audio_buffer_speech_started(self, event: dict[str, Any]) -> list[Action]:
        st = self.state
        self._active()
        item_id = event.get("item_id")
        if isinstance(item_id, str):
            self._speech_start_ms[item_id] = st.now_ms
        return self.barge_in()

    def barge_in(self) -> list[Action]:
        """The caller started speaking: stop what they are hearing, truncate at what they heard."""
        st = self.state
        actions: list[Action] = []
        if st.response_active and st.active_response_id:
            # In-flight deltas of a response being generated are not to be played.
            self._muted_responses.add(st.active_response_id)
            if not self.interrupt_response:
                actions.append(
                    SendToRealtime(
                        dumps({"type": "response.cancel", "response_id": st.active_response_id})
                    )
                )
        if not self._pending:
            return actions
        sid = json.dumps(st.stream_sid)
        actions.append(SendToTwilio('{"event":"clear","streamSid":' + sid + "}"))
        head = self._pending[0]
        item = head.item
        since = item.acked_at_ms if item.acked_at_ms is not None else st.now_ms
        played = item.acked + max(0, st.now_ms - since) * 8
        played = min(played, head.end, item.sent)
        seen: list[AssistantItem] = []
        for p in self._pending:
            if not seen or seen[-1] is not p.item:
                seen.append(p.item)
        self._pending.clear()
        for i, it in enumerate(seen):
            heard_bytes = played if i == 0 else 0
            it.interrupted = True
            it.heard_ms = heard_bytes // 8
            it.truncated = True
            self._muted_items.add(it.item_id)
            self._muted_responses.add(it.response_id)
            if it.item_id in self._stale_items:
                actions.extend(self._maybe_record_item(it))
                continue
            actions.append(
                SendToRealtime(
                    dumps(
                        {
                            "type": "conversation.item.truncate",
                            "item_id": it.item_id,
                            "content_index": 0,
                            "audio_end_ms": it.heard_ms,
                        }
                    )
                )
            )
            actions.extend(self._maybe_record_item(it))
        return actions

    def handle_input_audio_buffer_speech_stopped(self, event: dict[str, Any]) -> list[Action]:
        end = event.get("audio_end_ms")
        if isinstance(end, int) and self._input_origin_ms is not None:
            self._last_speech_stop_ms = self._input_origin_ms + end
        else:
            self._last_speech_stop_ms = self.state.now_ms
        return []

    def handle_input_audio_buffer_committed(self, event: dict[str, Any]) -> list[Action]:
        item_id = event.get("item_id")
        if self.transcription and isinstance(item_id, str):
            self.pending_transcripts.add(item_id)
        return []

    def handle_conversation_item_input_audio_transcription_completed(
        self, event: dict[str, Any]
    ) -> list[Action]:
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

    def handle_conversation_item_input_audio_transcription_failed(
        self, event: dict[str, Any]
    ) -> list[Action]:
        self.pending_transcripts.discard(event.get("item_id"))
        err = _obj(event.get("error"))
        return [Log("warning", f"caller transcription failed: {err.get('message')}")]

    def handle_response_created(self, event: dict[str, Any]) -> list[Action]:
        st = self.state
        st.response_active = True
        self._last_activity_ms = st.now_ms
        rid = _obj(event.get("response")).get("id")
        st.active_response_id = rid if isinstance(rid, str) else None
        return []

    def handle_response_output_item_added(self, event: dict[str, Any]) -> list[Action]:
        item = _obj(event.get("item"))
        if item.get("type") == "message" and item.get("role") == "assistant":
            item_id = item.get("id")
            rid = event.get("response_id")
            if isinstance(item_id, str) and item_id not in self._items:
                self._items[item_id] = AssistantItem(
                    item_id=item_id, response_id=rid if isinstance(rid, str) else ""
                )
        return []

    def handle_response_output_audio_transcript_delta(self, event: dict[str, Any]) -> list[Action]:
        item = self._items.get(str(event.get("item_id")))
        if item is not None and not item.transcript_done:
            item.transcript += str(event.get("delta") or "")
        return []

    def handle_response_output_audio_transcript_done(self, event: dict[str, Any]) -> list[Action]:
        item = self._items.get(str(event.get("item_id")))
        if item is None:
            return []
        transcript = event.get("transcript")
        if isinstance(transcript, str):
            item.transcript = transcript
        item.transcript_done = True
        return self._maybe_record_item(item)

    def handle_response_output_audio_done(self, event: dict[str, Any]) -> list[Action]:
        item = self._items.get(str(event.get("item_id")))
        if item is None:
            return []
        item.audio_done = True
        actions: list[Action] = []
        if item.dropped and not item.truncated:
            # Audio generated after the interruption never reached the caller.
            item.truncated = True
            item.interrupted = True
            item.heard_ms = item.sent // 8
            actions.append(
                SendToRealtime(
                    dumps(
                        {
                            "type": "conversation.item.truncate",
                            "item_id": item.item_id,
                            "content_index": 0,
                            "audio_end_ms": item.heard_ms,
                        }
                    )
                )
            )
        actions.extend(self._maybe_record_item(item))
        return actions

    def handle_response_done(self, event: dict[str, Any]) -> list[Action]:
        st = self.state
        self._last_activity_ms = st.now_ms
        response = _obj(event.get("response"))
        st.response_active = False
        st.active_response_id = None
        actions: list[Action] = [RecordUsage(Usage.from_response(response.get("usage")))]
        status = response.get("status")
        if status == "failed":
            details = _obj(response.get("status_details"))
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
        for item in list(self._items.values()):
            if item.response_id == response.get("id"):
                item.audio_done = True
                item.transcript_done = True
                actions.extend(self._maybe_record_item(item))
        if calls:
            self._open_calls.update(c.call_id for c in calls)
            st.tools_running += len(calls)
            actions.append(RunTools(tuple(calls)))
        elif st.response_create_owed and st.tools_running == 0:
            st.response_create_owed = False
            actions.extend(self._request_response())
        actions.extend(self._maybe_hang_up())
        return actions

    # ----------------------------------------------------------------- tools and control

    def tool_results(self, results: list[tuple[str, str, str]]) -> list[Action]:
        """Outputs of a fan-out: (call_id, name, output JSON string) each → one response.create."""
        st = self.state
        st.tools_running = max(0, st.tools_running - len(results))
        actions: list[Action] = []
        for call_id, name, output in results:
            if call_id not in self._open_calls:
                actions.append(Log("warning", f"output of {name} ({call_id}) dropped: "
                                               "the Realtime session that asked for it is gone"))
                continue
            self._open_calls.discard(call_id)
            actions.append(
                SendToRealtime(
                    dumps(
                        {
                            "type": "conversation.item.create",
                            "item": {
                                "type": "function_call_output",
                                "call_id": call_id,
                                "output": output,
                            },
                        }
                    )
                )
            )
        if st.tools_running == 0 and st.transfer_target is None:
            actions.extend(self._request_response())
        actions.extend(self._maybe_hang_up())
        return actions

    def say(self, instructions: str) -> list[Action]:
        """Ask the model to say something now (e.g. a holding line while a tool runs)."""
        if self.state.response_active or not self.state.realtime_ready:
            return []
        self.state.response_active = True
        return [
            SendToRealtime(
                dumps(
                    {
                        "type": "response.create",
                        "response": {"instructions": instructions, "conversation": "none"},
                    }
                )
            )
        ]

    def _request_response(self) -> list[Action]:
        st = self.state
        if st.response_active:
            st.response_create_owed = True
            return []
        st.response_active = True
        return [SendToRealtime('{"type":"response.create"}')]

    def request_hangup(self, reason: str = "agent_ended") -> list[Action]:
        """End the call once everything the agent says has been heard."""
        self.state.hangup_reason = reason
        return self._maybe_hang_up()

    def request_transfer(self, target: str) -> list[Action]:
        """Transfer the call once what is playing has been heard."""
        self.state.transfer_target = target
        self.state.hangup_reason = "transferred"
        return self._maybe_hang_up()

    def _maybe_hang_up(self) -> list[Action]:
        st = self.state
        if st.hangup_reason is None or st.ended:
            return []
        if self._pending or st.tools_running:
            return []
        if st.response_active or st.response_create_owed:
            return []
        st.ended = True
        if st.transfer_target is not None:
            return [Transfer(st.transfer_target)]
        return [HangUp(st.hangup_reason)]

    # ----------------------------------------------------------------- limits

    def _active(self) -> None:
        """The caller did something: the idle clock starts again."""
        self._last_activity_ms = self.state.now_ms
        self._idle_stage = 0

    def _next_deadline(self) -> int:
        lim = self.limits
        candidates = [NEVER]
        if lim.max_call_ms:
            if self._limit_stage == 0:
                candidates.append(max(0, lim.max_call_ms - lim.warning_ms))
            elif self._limit_stage == 1:
                candidates.append(lim.max_call_ms)
        if lim.idle_reprompt_ms and self._idle_stage == 0:
            candidates.append(self._last_activity_ms + lim.idle_reprompt_ms)
        elif lim.idle_hangup_ms and self._idle_stage == 1:
            candidates.append(self._last_activity_ms + lim.idle_hangup_ms)
        return min(candidates)

    def busy(self) -> bool:
        """The agent is talking, about to, or waiting on a tool."""
        st = self.state
        return bool(self._pending or st.response_active or st.response_create_owed
                    or st.tools_running)

    def on_clock(self) -> list[Action]:
        """Call time reached :attr:`deadline_ms`: apply the call-length and idle limits.

        The consumer calls this from the media path only when a frame's timestamp reaches
        the deadline (one integer comparison per frame).
        """
        st = self.state
        lim = self.limits
        now = st.now_ms
        actions: list[Action] = []
        if st.ended or st.hangup_reason is not None or not st.realtime_ready:
            self.deadline_ms = NEVER if st.ended or st.hangup_reason else now + 1000
            return actions
        if lim.max_call_ms and self._limit_stage == 0 and now >= lim.max_call_ms - lim.warning_ms:
            self._limit_stage = 1
            actions.append(Log("info", "call nears its maximum length: warning the caller"))
            actions.extend(self.say(lim.warning_instructions))
        if lim.max_call_ms and self._limit_stage == 1 and now >= lim.max_call_ms:
            self._limit_stage = 2
            actions.append(Log("info", "call reached its maximum length: ending it"))
            actions.extend(self.say(lim.goodbye_instructions))
            actions.extend(self.request_hangup("limit"))
            self.deadline_ms = NEVER
            return actions
        if self.busy():
            self._last_activity_ms = now  # idle time counts from when the agent went quiet
        elif lim.idle_reprompt_ms and self._idle_stage == 0 and (
            now - self._last_activity_ms >= lim.idle_reprompt_ms
        ):
            self._idle_stage = 1
            self._last_activity_ms = now
            actions.append(Log("info", "caller silent: reprompting"))
            actions.extend(self.say(lim.reprompt_instructions))
        elif lim.idle_hangup_ms and self._idle_stage == 1 and (
            now - self._last_activity_ms >= lim.idle_hangup_ms
        ):
            actions.append(Log("info", "caller still silent: ending the call"))
            actions.extend(self.say(lim.goodbye_instructions))
            actions.extend(self.request_hangup("idle"))
            self.deadline_ms = NEVER
            return actions
        self.deadline_ms = max(now + 20, self._next_deadline())
        return actions

    # ----------------------------------------------------------------- reconnecting

    def realtime_lost(self) -> list[Action]:
        """The Realtime connection dropped: buffer caller audio until a new session is ready.

        Audio already queued at Twilio keeps playing and its marks keep counting; items of the
        old session are never truncated in the new one.
        """
        st = self.state
        st.realtime_ready = False
        self.pending_transcripts.clear()
        st.response_active = False
        st.active_response_id = None
        st.response_create_owed = False
        self._stale_items.update(self._items)
        self._open_calls.clear()
        self._input_origin_ms = None
        self._last_speech_stop_ms = None
        return []

    def reseed_events(self) -> list[str]:
        """``conversation.item.create`` events replaying the conversation so far."""
        events: list[str] = []
        for role, text in self.history:
            if role == "assistant":
                item: dict[str, Any] = {
                    "type": "conversation.item.create",
                    "item": {
                        "type": "message",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": text}],
                    },
                }
            else:
                item = user_text_item(text, role="system" if role == "system" else "user")
            events.append(dumps(item))
        return events

    # ----------------------------------------------------------------- end of call

    def finish(self) -> list[Action]:
        """The call is over: record every assistant turn not yet recorded, as heard so far."""
        actions: list[Action] = []
        for p in self._pending:
            item = p.item
            if not item.recorded and item.heard_ms is None:
                since = item.acked_at_ms if item.acked_at_ms is not None else self.state.now_ms
                played = min(item.acked + max(0, self.state.now_ms - since) * 8, p.end)
                item.heard_ms = played // 8
                item.interrupted = item.heard_ms < item.sent // 8
        self._pending.clear()
        for item in self._items.values():
            item.audio_done = item.transcript_done = True
            actions.extend(self._maybe_record_item(item))
        return actions

    def _maybe_record_item(self, item: AssistantItem) -> list[Action]:
        if item.recorded:
            return []
        if not item.interrupted:
            if not (item.audio_done and item.transcript_done):
                return []
            if any(p.item is item for p in self._pending):
                return []  # still playing
        elif not item.transcript_done:
            return []  # the transcript is still coming; recorded at transcript.done
        item.recorded = True
        if not item.transcript and item.sent == 0:
            return []
        total_ms = item.sent // 8
        heard_ms = total_ms if item.heard_ms is None else min(item.heard_ms, total_ms)
        interrupted = item.interrupted and heard_ms < total_ms
        heard_text = estimate_heard(item.transcript, heard_ms, total_ms) if interrupted else None
        if item.transcript:
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


_WORD = re.compile(r"\S+")


def estimate_heard(text: str, heard_ms: int | None, total_ms: int | None) -> str:
    """The prefix of ``text`` the caller heard after ``heard_ms`` of ``total_ms`` of audio.

    Speech is assumed to advance evenly through the characters of ``text``. A word (a run of
    non-space characters, punctuation included) counts as heard when its middle was played,
    so the result always ends on a word boundary: never mid-word, never with trailing space.
    ``heard_ms <= 0`` gives ``""``; ``heard_ms >= total_ms`` (or an unknown total) gives the
    whole text.
    """
    if not text:
        return ""
    heard = heard_ms or 0
    if heard <= 0:
        return ""
    if not total_ms or total_ms <= 0 or heard >= total_ms:
        return text
    cut = len(text) * heard / total_ms
    end = 0
    for match in _WORD.finditer(text):
        if (match.start() + match.end()) / 2 <= cut:
            end = match.end()
        else:
            break
    return text[:end]


def user_text_item(text: str, role: str = "user") -> dict[str, Any]:
    """A ``conversation.item.create`` event carrying text from the caller's side."""
    return {
        "type": "conversation.item.create",
        "item": {
            "type": "message",
            "role": role,
            "content": [{"type": "input_text", "text": text}],
        },
    }
