"""Fuzzing the sans-I/O call core with arbitrary and mutated Twilio messages and Realtime events.

Each example drives one ``CallSession`` through a random sequence of inputs (realistic shapes,
mutated: wrong types, missing keys, huge and negative numbers, unknown events, marks out of
order and duplicated, clear/mark races, tool results at odd times) and checks after every step:

- no exception escapes;
- every message the core builds is valid JSON;
- a truncate never goes beyond the audio sent for its item, nor below 0;
- no audio is sent to Twilio for an item after it was truncated (cleared);
- the mark bookkeeping stays consistent (increasing, within what was sent, never negative);
- at most one ``response.create`` is outstanding (none sent before ``response.done``).

The last test feeds raw text frames (cut, padded, junk) to ``receive_twilio`` and raw data to
``receive_realtime``: the core's own validation decides, and nothing invalid reaches OpenAI.
The other tests' inputs follow what that validation lets through: Twilio messages are JSON
objects whose ``event`` is a known string; media payloads and audio deltas pass its base64
check; timestamps are within ``0 <= t < 2**31``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voiceconv import session as core

FUZZ = settings(
    max_examples=120,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

STREAM_SID = "MZ" + "a" * 32
ITEMS = ["item_1", "item_2", "item_3"]
RESPONSES = ["resp_1", "resp_2", "resp_3"]
CALLS = ["call_1", "call_2"]

# ----------------------------------------------------------------------------- strategies

junk = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=5,
)


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any], keep: tuple[str, ...] = ()) -> dict[str, Any]:
    """``base`` as is, or with a key dropped / a value (top-level or nested) replaced by junk."""
    msg = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(0, 2))):
        keys = [k for k in msg if k not in keep]
        if not keys:
            break
        key = draw(st.sampled_from(sorted(keys)))
        how = draw(st.sampled_from(["drop", "junk", "nested"]))
        if how == "drop":
            del msg[key]
        elif how == "junk" or not isinstance(msg[key], dict) or not msg[key]:
            msg[key] = draw(junk)
        else:
            inner = msg[key]
            inner[draw(st.sampled_from(sorted(inner)))] = draw(junk)
    return msg


#: Keys the core reads, so that junk lands where it is looked at.
field_names = st.sampled_from(
    ["error", "response", "item", "item_id", "response_id", "delta", "transcript",
     "audio_end_ms", "media", "mark", "dtmf", "start", "streamSid", "session", "usage"]
) | st.text(max_size=4)


def b64(n: int) -> str:
    return base64.b64encode(bytes([0x55]) * n).decode()


# Deltas: real audio of various lengths, and strings that pass a base64 alphabet check
# without being a whole number of quanta (the consumer lets these through).
whole_deltas = st.integers(0, 1600).map(b64)
odd_deltas = st.one_of(
    whole_deltas, st.sampled_from(["", "=", "==", "A", "AB", "ABC=", "AB==", "////"])
)

item_ids = st.sampled_from(ITEMS)
response_ids = st.sampled_from(RESPONSES)


@st.composite
def realtime_events(draw: st.DrawFn, mutate: bool = True) -> dict[str, Any]:
    item, resp, call_id = draw(item_ids), draw(response_ids), draw(st.sampled_from(CALLS))
    base = draw(
        st.sampled_from(
            [
                {"type": "session.created", "session": {}},
                {"type": "session.updated", "session": {"type": "realtime"}},
                {"type": "response.created", "response": {"id": resp, "status": "in_progress"}},
                {"type": "response.output_item.added", "response_id": resp, "output_index": 0,
                 "item": {"id": item, "type": "message", "role": "assistant"}},
                {"type": "response.output_audio_transcript.delta", "response_id": resp,
                 "item_id": item, "delta": "hel"},
                {"type": "response.output_audio_transcript.done", "response_id": resp,
                 "item_id": item, "transcript": "hello there"},
                {"type": "response.output_audio.done", "response_id": resp, "item_id": item},
                {"type": "response.done", "response": {
                    "id": resp, "status": "completed", "output": [],
                    "usage": {"input_tokens": 3, "output_tokens": 5}}},
                {"type": "response.done", "response": {
                    "id": resp, "status": "completed",
                    "output": [{"type": "function_call", "call_id": call_id, "name": "lookup",
                                "arguments": "{}", "id": "item_fc"}]}},
                {"type": "response.done", "response": {
                    "id": resp, "status": "cancelled", "status_details": {
                        "type": "cancelled", "reason": "turn_detected"}}},
                {"type": "input_audio_buffer.speech_started", "audio_start_ms": 100,
                 "item_id": "item_user"},
                {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 900,
                 "item_id": "item_user"},
                {"type": "conversation.item.input_audio_transcription.completed",
                 "item_id": "item_user", "content_index": 0, "transcript": "hi"},
                {"type": "conversation.item.input_audio_transcription.failed",
                 "item_id": "item_user", "error": {"message": "nope"}},
                {"type": "conversation.item.truncated", "item_id": item, "audio_end_ms": 10},
                {"type": "error", "error": {"type": "invalid_request_error",
                                            "code": "conversation_already_has_active_response",
                                            "message": "busy"}},
                {"type": "error", "error": {"type": "server_error", "code": "server_error"}},
                {"type": "rate_limits.updated", "rate_limits": []},
                {"type": "response.output_audio.delta", "response_id": resp, "item_id": item,
                 "delta": b64(160)},
                {"type": "something.new", "x": 1},
            ]
        )
    )
    if mutate and draw(st.integers(0, 3)) == 0:
        return draw(mutated(base))
    return base


@st.composite
def twilio_messages(draw: st.DrawFn, mutate: bool = True) -> dict[str, Any]:
    name = str(draw(st.integers(-2, 40)))
    base = draw(
        st.sampled_from(
            [
                {"event": "mark", "streamSid": STREAM_SID, "sequenceNumber": "5",
                 "mark": {"name": name}},
                {"event": "dtmf", "streamSid": STREAM_SID,
                 "dtmf": {"track": "inbound_track", "digit": "5"}},
                {"event": "connected", "protocol": "Call", "version": "1.0.0"},
                {"event": "start", "streamSid": STREAM_SID, "start": {"callSid": "CA1"}},
                {"event": "media", "streamSid": STREAM_SID,
                 "media": {"timestamp": "20", "payload": b64(160)}},
            ]
        )
    )
    if mutate and draw(st.booleans()):
        return draw(mutated(base, keep=("event",)))
    return base


@dataclass
class Step:
    kind: str
    args: tuple[Any, ...] = ()


def steps(mutate: bool) -> st.SearchStrategy[Step]:
    """Program steps; ``mutate`` adds malformed events and odd deltas."""
    return st.one_of(
        st.builds(lambda t: Step("media", (t,)), st.integers(0, 2**31 - 1)),
        st.builds(lambda d: Step("advance", (d,)), st.integers(0, 3000)),
        st.builds(lambda i, r, d: Step("delta", (i, r, d)), item_ids, response_ids,
                  odd_deltas if mutate else whole_deltas),
        st.builds(lambda e: Step("realtime", (e,)), realtime_events(mutate)),
        st.builds(lambda m: Step("twilio", (m,)), twilio_messages(mutate)),
        st.just(Step("echo_next")),
        st.just(Step("echo_all")),
        st.builds(lambda n: Step("echo", (n,)), st.integers(-1, 40)),
        st.just(Step("tools_done")),
        st.just(Step("say")),
        st.just(Step("hangup")),
    )


# ----------------------------------------------------------------------------- the harness


@dataclass
class Harness:
    """Feeds a ``CallSession`` and checks every action it returns against the invariants."""

    session: core.CallSession
    now: int = 0
    sent_bytes: dict[str, int] = field(default_factory=dict)
    truncated: set[str] = field(default_factory=set)
    marks_out: list[str] = field(default_factory=list)
    response_outstanding: bool = False
    tool_calls: list[core.ToolCall] = field(default_factory=list)
    #: The I/O layer's monotonic clock, as handed to the core's stamps (s).
    clock: float = 0.0

    def check(self, actions: list[core.Action], delta_item: str | None = None) -> None:
        for action in actions:
            if isinstance(action, core.SendToTwilio):
                msg = json.loads(action.text)
                assert msg["streamSid"] == STREAM_SID
                if msg["event"] == "media":
                    assert delta_item is not None, "audio to Twilio from no delta"
                elif msg["event"] == "mark":
                    self.marks_out.append(msg["mark"]["name"])
            elif isinstance(action, core.SendToRealtime):
                event = json.loads(action.text)
                self.check_realtime(event)
            elif isinstance(action, core.RunTools):
                self.tool_calls.extend(action.calls)
            elif isinstance(action, core.FlushEarlyAudio):
                self.check(self.session.early_audio_sent())  # as the consumer runs it
            elif isinstance(action, core.StampTime):
                self.clock += 0.001
                self.session.stamp(action, self.clock)  # as the consumer runs it
        self.check_playback()

    def check_realtime(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "conversation.item.truncate":
            item, end = event["item_id"], event["audio_end_ms"]
            assert isinstance(end, int) and end >= 0, event
            assert end <= self.sent_bytes.get(item, 0) // 8, (event, self.sent_bytes)
            self.truncated.add(item)
        elif kind == "response.create":
            assert not self.response_outstanding, "response.create while one is outstanding"
            self.response_outstanding = True

    def check_playback(self) -> None:
        pending = list(self.session.playback.pending)  # the mark bookkeeping itself
        seqs = [p.seq for p in pending]
        assert seqs == sorted(set(seqs)), seqs
        for p in pending:
            assert 0 <= p.end <= p.item.sent, (p.end, p.item.sent)
            assert 0 <= p.item.acked <= p.item.sent
        for item in self.session.playback.items.values():
            assert item.sent >= 0, item
            assert 0 <= item.acked <= max(item.sent, 0)

    def delta(self, item: str, response: str, delta: str) -> None:
        out = self.session.realtime_audio_delta(item, response, delta)
        if out is None:
            return
        assert item not in self.truncated, f"audio for {item} after its truncate"
        try:
            size = len(base64.b64decode(delta))
        except (binascii.Error, ValueError):
            size = 0
        self.sent_bytes[item] = self.sent_bytes.get(item, 0) + size
        sent = self.session.audio_out(out)
        actions: list[core.Action] = (
            sent if isinstance(sent, list)
            else [core.SendToTwilio(sent[0]), core.SendToTwilio(sent[1])]
        )
        self.check(actions, delta_item=item)

    def realtime(self, event: dict[str, Any]) -> None:
        if event.get("type") == "response.done":
            self.response_outstanding = False
        if event.get("type") == "response.output_audio.delta":
            item, resp = event.get("item_id"), event.get("response_id")
            if isinstance(item, str) and isinstance(resp, str) and isinstance(
                event.get("delta"), str
            ):
                self.delta(item, resp, event["delta"])
            return  # the consumer takes deltas on its fast path only
        actions = self.session.handle_realtime(event)
        self.check(actions)

    def echo(self, name: str) -> None:
        msg = {"event": "mark", "streamSid": STREAM_SID, "mark": {"name": name}}
        self.check(self.session.handle_twilio(msg))

    def run(self, step: Step) -> None:
        s = self.session
        if step.kind == "media":
            self.now = step.args[0]
            s.twilio_media(b64(160), self.now)
        elif step.kind == "advance":
            self.now = min(self.now + step.args[0], 2**31 - 1)
            s.twilio_media(b64(160), self.now)
        elif step.kind == "delta":
            self.delta(*step.args)
        elif step.kind == "realtime":
            self.realtime(step.args[0])
        elif step.kind == "twilio":
            self.check(s.handle_twilio(step.args[0]))
        elif step.kind == "echo_next" and self.marks_out:
            self.echo(self.marks_out.pop(0))
        elif step.kind == "echo_all":
            while self.marks_out:
                self.echo(self.marks_out.pop(0))
        elif step.kind == "echo":
            self.echo(str(step.args[0]))
        elif step.kind == "tools_done" and self.tool_calls:
            done, self.tool_calls = self.tool_calls, []
            self.check(s.tool_results(
                [core.ToolOutcome(c.call_id, c.name, c.arguments, '{"ok":true}') for c in done]))
        elif step.kind == "say":
            self.check(s.say("Say: one moment please."))
        elif step.kind == "hangup":
            self.check(s.request_hangup("agent_ended"))


def started(greeting: str = "Greet the caller.") -> Harness:
    session = core.CallSession(greeting=greeting, instructions="Be brief.", early_audio_frames=10)
    harness = Harness(session)
    start = {
        "event": "start", "sequenceNumber": "1", "streamSid": STREAM_SID,
        "start": {"accountSid": "AC1", "streamSid": STREAM_SID, "callSid": "CA1",
                  "tracks": ["inbound"], "customParameters": {"call_token": "t"}},
    }
    harness.check(session.handle_twilio(start))
    return harness


def ready(harness: Harness) -> Harness:
    harness.realtime({"type": "session.created", "session": {}})
    harness.realtime({"type": "session.updated", "session": {"type": "realtime"}})
    return harness


# ----------------------------------------------------------------------------- the tests


@FUZZ
@given(st.lists(steps(mutate=False), max_size=60), st.booleans())
def test_call_core_keeps_its_invariants_on_well_formed_input(
    program: list[Step], greet: bool
) -> None:
    harness = ready(started("Greet the caller." if greet else ""))
    for step in program:
        harness.run(step)
    harness.check(harness.session.finish())


@FUZZ
@given(st.lists(steps(mutate=False), max_size=40))
def test_call_core_before_the_session_is_ready(program: list[Step]) -> None:
    # Inputs arriving while the Realtime session is still opening (no session.updated yet,
    # unless the program sends one).
    harness = started()
    for step in program:
        harness.run(step)
    harness.check(harness.session.finish())




@FUZZ
@given(st.lists(steps(mutate=True), max_size=60), st.booleans())
def test_call_core_survives_malformed_input(program: list[Step], greet: bool) -> None:
    harness = ready(started("Greet the caller." if greet else ""))
    for step in program:
        harness.run(step)
    harness.check(harness.session.finish())


@FUZZ
@given(st.lists(st.dictionaries(field_names, junk, max_size=4), max_size=20))
def test_arbitrary_objects_never_crash_the_core(objects: list[dict[str, Any]]) -> None:
    harness = ready(started())
    for obj in objects:
        for event in ("mark", "dtmf", "connected", "start", "media", "stop"):
            harness.session.handle_twilio({**obj, "event": event})
        harness.session.handle_realtime(obj)
        harness.session.handle_realtime({**obj, "type": "response.done"})
        harness.session.handle_realtime({**obj, "type": "error"})
    harness.session.finish()


@FUZZ
@given(
    st.lists(st.tuples(st.integers(1, 800), st.integers(0, 400)), min_size=1, max_size=12),
    st.permutations(range(12)),
    st.integers(0, 2000),
)
def test_barge_in_after_out_of_order_and_duplicate_echoes_truncates_within_what_was_sent(
    chunks: list[tuple[int, int]], order: list[int], talk_ms: int
) -> None:
    harness = ready(started(""))
    harness.realtime({"type": "response.created", "response": {"id": "resp_1"}})
    for size, gap in chunks:
        harness.delta("item_1", "resp_1", b64(size))
        harness.run(Step("advance", (gap,)))
    sent = list(harness.marks_out)
    for i in order:  # echoes out of order, some twice
        if i < len(sent):
            harness.echo(sent[i])
            harness.echo(sent[i])
    harness.run(Step("advance", (talk_ms,)))
    harness.realtime({"type": "input_audio_buffer.speech_started", "item_id": "item_user"})
    harness.delta("item_1", "resp_1", b64(160))  # in flight after the clear: never played
    harness.realtime({"type": "response.output_audio.done", "item_id": "item_1",
                      "response_id": "resp_1"})
    harness.realtime({"type": "response.done", "response": {"id": "resp_1",
                                                            "status": "cancelled"}})
    harness.check(harness.session.finish())


def test_say_before_the_session_is_ready_never_doubles_response_create() -> None:
    harness = started()
    harness.run(Step("say"))
    harness.realtime({"type": "session.updated", "session": {"type": "realtime"}})


# ----------------------------------------------------------------------------- raw frames


def valid_media(text: str) -> str | None:
    """The payload of ``text`` if it is a media frame the core must pass on (an independent
    statement of the rules of docs/protocols.md §T2), else None."""
    try:
        msg = json.loads(text)
        media = msg["media"]
        payload, timestamp = media["payload"], int(media["timestamp"])
    except (ValueError, KeyError, TypeError, IndexError, OverflowError, RecursionError):
        return None
    if len(text) > 64 * 1024 or msg.get("event") != "media" or msg.get("streamSid") != STREAM_SID:
        return None
    if not isinstance(payload, str) or not 0 <= timestamp < 2**31:
        return None
    if re.fullmatch(r"[A-Za-z0-9+/]*={0,2}", payload) is None:
        return None  # it must not be able to break out of the JSON it is put in
    return payload


@st.composite
def raw_twilio_frames(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(st.text(max_size=200))
    msg = draw(twilio_messages(mutate=True))
    text = json.dumps(msg)
    if kind == 1:
        return text[: draw(st.integers(0, len(text)))]
    if kind == 2:
        msg["media"] = {"timestamp": draw(junk | st.integers(-5, 2**32)),
                        "payload": draw(st.text(alphabet="AB+/=\"\\ \n", max_size=12) | junk)}
        msg["event"] = "media"
        return json.dumps(msg)
    if kind == 3:
        return json.dumps({**msg, "pad": "x" * draw(st.integers(60_000, 70_000))})
    return text


@FUZZ
@given(st.lists(raw_twilio_frames(), max_size=40), st.lists(st.binary(max_size=80) | st.text(
    max_size=80), max_size=10))
def test_raw_frames_never_crash_the_core_and_invalid_ones_never_reach_openai(
    frames: list[str], realtime_data: list[bytes | str]
) -> None:
    harness = ready(started(""))
    s = harness.session
    for text in frames:
        out = s.receive_twilio(text)
        expected = valid_media(text)
        if isinstance(out, str):
            if expected is None:
                assert out == "", (text, out)  # a media-shaped fast-path answer for bad input
            else:
                assert json.loads(out) == {"type": "input_audio_buffer.append",
                                           "audio": expected}
            continue
        appends = [a for a in out if isinstance(a, core.SendToRealtime)
                   and json.loads(a.text)["type"] == "input_audio_buffer.append"]
        if expected is None:
            assert appends == [], (text, appends)
        harness.check(out)
    for data in realtime_data:
        result = s.receive_realtime(data)
        if isinstance(result, tuple):
            for part in result:
                json.loads(part)
        else:
            harness.check(result)
    harness.check(s.finish())
