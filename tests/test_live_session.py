"""The GPT-Live side of the call core: GPT-Live events in, the same actions out (no I/O)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from tests.test_call import SID, start_msg
from voiceconv.session import (
    CallSession,
    EndCall,
    FlushEarlyAudio,
    Log,
    RecordBargeIn,
    RecordFirstAudio,
    RecordSessionSeconds,
    RecordTurn,
    RunTools,
    SendToRealtime,
    SendToTwilio,
    StartStream,
    ToolOutcome,
)
from voiceconv.session.live_rules import CLIENT_DELEGATION_REPLY
from voiceconv.session.live_side import CLIP_EVENT_ID, LiveCallSession
from voiceconv.testing import validate_live_client_event


def b64(n: int, fill: int = 0x55) -> str:
    return base64.b64encode(bytes([fill]) * n).decode()


class LiveCall:
    """A LiveCallSession driven as the consumer drives it (adopted after the stream start)."""

    def __init__(self, **options: Any) -> None:
        old = CallSession()
        (started,) = old.handle_twilio(start_msg())
        assert isinstance(started, StartStream)
        self.s = LiveCallSession.adopt(old, **options)
        self.now = 0
        self.marks: list[int] = []
        self.sent: list[dict[str, Any]] = []

    def event(self, **event: Any) -> list[Any]:
        out = self.s.receive_realtime(json.dumps(event))
        actions = [SendToTwilio(out[0]), SendToTwilio(out[1])] if isinstance(out, tuple) else out
        return self.run(actions)

    def run(self, actions: list[Any]) -> list[Any]:
        """Record what goes out; a FlushEarlyAudio asks for the rest of the buffer, as the
        consumer does."""
        more: list[Any] = []
        for a in actions:
            if isinstance(a, SendToRealtime):
                self.sent.append(json.loads(a.text))
                assert validate_live_client_event(json.loads(a.text)) == [], a.text
            if isinstance(a, SendToTwilio):
                msg = json.loads(a.text)
                if msg["event"] == "mark":
                    self.marks.append(int(msg["mark"]["name"]))
            if isinstance(a, FlushEarlyAudio):
                more.extend(self.run(self.s.early_audio_sent()))
        return actions + more

    def media(self, ms: int = 20) -> Any:
        self.now += ms
        frame = json.dumps({"event": "media", "streamSid": SID, "sequenceNumber": "2",
                            "media": {"track": "inbound", "chunk": "1",
                                      "timestamp": str(self.now), "payload": b64(160, 0xFF)}})
        return self.s.receive_twilio(frame)

    def echo_all(self) -> list[Any]:
        actions: list[Any] = []
        for seq in self.marks:
            actions.extend(self.s.mark_echo(seq))
        self.marks.clear()
        return actions


def turns(actions: list[Any]) -> list[Any]:
    return [a.turn for a in actions if isinstance(a, RecordTurn)]


def started(call: LiveCall) -> list[Any]:
    return call.event(type="session.started", event_id="e1",
                      session={"id": "s", "expires_at": 1, "model": "gpt-live-1",
                               "status": "active"})


def test_caller_audio_goes_out_as_live_appends_and_is_buffered_until_started() -> None:
    call = LiveCall(greeting="Greet the caller.")
    assert call.media() == ""  # buffered: the session is not ready
    assert call.media() == ""
    actions = started(call)
    appends = [a for a in call.sent if a["type"] == "session.input_audio.append"]
    assert len(appends) == 2 and appends[0]["audio"] == b64(160, 0xFF)
    assert call.sent[-1] == {"type": "session.commentary.append",
                             "content": "Greet the caller.", "delegation_id": None}
    assert not any(isinstance(a, Log) and a.level == "warning" for a in actions)
    text = call.media()
    assert isinstance(text, str) and json.loads(text)["type"] == "session.input_audio.append"


def test_assistant_audio_goes_to_twilio_with_marks_and_turns_come_from_fragments() -> None:
    call = LiveCall()
    started(call)
    call.media()
    out = call.s.receive_realtime(json.dumps({"type": "session.output_audio.delta",
                                              "delta": b64(800)}))
    assert not isinstance(out, tuple)  # the first audio is recorded
    assert any(isinstance(a, RecordFirstAudio) for a in out)
    media, mark = (json.loads(a.text) for a in out if isinstance(a, SendToTwilio))
    assert media["event"] == "media" and media["media"]["payload"] == b64(800)
    call.marks.append(int(mark["mark"]["name"]))
    call.event(type="session.output_transcript.delta", event_id="e", delta="Hello",
               start_ms=0, end_ms=50)
    call.event(type="session.output_transcript.delta", event_id="e", delta=" there.",
               start_ms=50, end_ms=100)
    assert turns(call.echo_all()) == []  # still the open turn
    actions = call.event(type="session.input_transcript.delta", event_id="e", delta="Hi",
                         start_ms=300, end_ms=400)
    (assistant,) = turns(actions)
    assert (assistant.role, assistant.text, assistant.interrupted) == (
        "assistant", "Hello there.", False)
    assert assistant.total_ms == 100
    (caller,) = turns(call.s.finish())
    assert (caller.role, caller.text) == ("caller", "Hi")


def test_caller_speech_over_queued_audio_clears_twilio_without_truncate() -> None:
    call = LiveCall()
    started(call)
    call.media()
    for _ in range(5):
        call.event(type="session.output_audio.delta", delta=b64(800))  # 500 ms queued
    call.event(type="session.output_transcript.delta", event_id="e", delta="A long answer",
               start_ms=0, end_ms=500)
    call.s.mark_echo(call.marks[0])  # 100 ms heard
    actions = call.event(type="session.input_transcript.delta", event_id="e", delta="Wait",
                         start_ms=120, end_ms=300)
    clears = [json.loads(a.text) for a in actions if isinstance(a, SendToTwilio)]
    assert clears == [{"event": "clear", "streamSid": SID}]
    assert not [a for a in actions if isinstance(a, SendToRealtime)]  # no truncate
    kinds = [type(a) for a in actions]  # the I/O layer times the reaction up to the marker
    assert kinds.count(RecordBargeIn) == 1
    assert kinds.index(SendToTwilio) < kinds.index(RecordBargeIn)
    (assistant,) = turns(actions)
    assert assistant.interrupted and assistant.heard_ms == 100 and assistant.total_ms == 500
    # What the model says next is a new turn, played.
    out = call.event(type="session.output_audio.delta", delta=b64(160))
    assert any(isinstance(a, SendToTwilio) for a in out)
    assert len(call.s.playback.items) == 2


def test_a_delegated_function_call_runs_and_its_output_continues_the_response() -> None:
    call = LiveCall()
    started(call)
    call.event(type="session.delegation.created", event_id="e", offset_ms=0,
               delegation={"id": "d1", "target": "responses", "type": "delegation"})
    actions = call.event(type="response.event", event_id="e", delegation_id="d1", event={
        "type": "response.output_item.done", "output_index": 0, "sequence_number": 1,
        "item": {"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "weather",
                 "arguments": '{"city":"Oslo"}'}})
    (run,) = [a for a in actions if isinstance(a, RunTools)]
    assert [(c.call_id, c.name, c.arguments) for c in run.calls] == [
        ("c1", "weather", '{"city":"Oslo"}')]
    assert call.s.busy()
    call.sent.clear()
    done = call.s.tool_results([ToolOutcome("c1", "weather", '{"city":"Oslo"}', "sunny")])
    sent = [json.loads(a.text) for a in done if isinstance(a, SendToRealtime)]
    assert sent == [
        {"type": "response.item.create",
         "item": {"type": "function_call_output", "call_id": "c1", "output": "sunny"}},
        {"type": "response.create"},
    ]
    for event in sent:
        assert validate_live_client_event(event) == []
    (tool,) = turns(done)
    assert tool.role == "tool" and "sunny" in tool.text


def test_usage_seconds_are_cumulative() -> None:
    call = LiveCall()
    started(call)
    a = call.event(type="session.usage.updated", event_id="e", usage={"seconds": 3.0})
    assert a == [RecordSessionSeconds(3.0)]
    assert call.event(type="session.usage.updated", event_id="e", usage={"seconds": 3.0}) == []
    closed = call.event(type="session.closed", event_id="e", reason="close_requested",
                        session={}, usage={"seconds": 7})
    assert RecordSessionSeconds(7.0) in closed


def test_session_start_carries_the_history_after_a_drop() -> None:
    call = LiveCall()
    started(call)
    call.s.history.extend([("user", "My name is Ada."), ("assistant", "Hello Ada.")])
    call.s.realtime_lost()
    text = call.s.start_event({"model": "gpt-live-1"})
    event = json.loads(text)
    assert validate_live_client_event(event) == []
    assert [i["role"] for i in event["session"]["input"]] == ["user", "assistant"]
    assert call.s.reseed_events() == []


def test_a_drop_closes_the_open_turns_into_the_history() -> None:
    call = LiveCall()
    started(call)
    call.event(type="session.input_transcript.delta", event_id="e", delta="I am Ada",
               start_ms=0, end_ms=300)
    (caller,) = turns(call.s.realtime_lost())
    assert caller.text == "I am Ada"
    event = json.loads(call.s.start_event({"model": "gpt-live-1"}))
    assert event["session"]["input"][-1]["content"][0]["text"] == "I am Ada"


def test_a_goodbye_holds_the_hang_up_until_it_has_played() -> None:
    call = LiveCall()
    started(call)
    said = call.s.say("Say goodbye.", queue=True)
    assert json.loads(said[0].text)["type"] == "session.commentary.append"
    assert call.s.request_hangup("limit")[1:] == []  # nothing heard yet: no hang-up
    call.event(type="session.output_audio.delta", delta=b64(160))
    hang = call.echo_all()
    assert any(getattr(a, "type", "") == "hang_up" for a in hang)


def test_malformed_events_are_logged_and_ignored() -> None:
    call = LiveCall()
    (log,) = call.s.receive_realtime(b"{not json")  # type: ignore[misc]
    assert isinstance(log, Log) and log.level == "warning"
    (log,) = call.s.receive_realtime('{"type":"session.output_audio.delta","delta":"%%%"}')  # type: ignore[misc]
    assert isinstance(log, Log)
    assert call.event(type="session.bogus") == []


def test_usage_keeps_the_paused_share_of_the_seconds() -> None:
    call = LiveCall()
    started(call)
    a = call.event(type="session.usage.updated", event_id="e",
                   usage={"seconds": 90, "active_seconds": 60, "paused_seconds": 30})
    assert a == [RecordSessionSeconds(90.0, 30.0)]
    odd = call.event(type="session.usage.updated", event_id="e",
                     usage={"seconds": 100, "paused_seconds": -4})
    assert odd == [RecordSessionSeconds(100.0, None)]  # a split that makes no sense: none


@dataclass(frozen=True)
class Clip:
    name: str = "notice"
    audio: str = base64.b64encode(b"\x00\x01" * 2400).decode()  # 100 ms of PCM16 at 24 kHz
    text: str = "This call is recorded."


def test_the_opening_clip_plays_before_the_greeting_and_holds_other_lines() -> None:
    call = LiveCall(greeting="Greet the caller.", opening_clip=Clip())
    started(call)
    (play,) = call.sent
    assert play == {"type": "session.output_audio.fixture.play", "audio": Clip.audio,
                    "event_id": CLIP_EVENT_ID}
    # The clip's audio comes as output deltas; lines asked for meanwhile wait for it.
    call.event(type="session.output_audio.fixture.playing", event_id="e",
               client_event_id=CLIP_EVENT_ID)
    call.event(type="session.output_audio.delta", delta=b64(800))
    assert call.s.say("The office closes at five.") == []
    call.event(type="session.output_audio.fixture.played", event_id="e",
               client_event_id="someone_else")  # not ours: still playing
    assert call.s.clip_state == "playing"
    after = call.event(type="session.output_audio.fixture.played", event_id="e",
                       client_event_id=CLIP_EVENT_ID)
    assert [(e["type"], e["content"]) for e in call.sent[1:]] == [
        ("session.instructions.append",
         "[The caller has just heard this recorded message: This call is recorded.]"),
        ("session.commentary.append", "The office closes at five."),
        ("session.commentary.append", "Greet the caller."),
    ]
    assert turns(after) == []  # recorded once heard
    (clip,) = turns(call.echo_all())
    assert (clip.role, clip.text, clip.total_ms, clip.interrupted) == (
        "assistant", "This call is recorded.", 100, False)
    # The greeting's audio is a turn of its own.
    call.event(type="session.output_audio.delta", delta=b64(160))
    assert len(call.s.playback.items) == 2


def test_a_clip_the_service_refuses_is_logged_and_the_greeting_follows() -> None:
    call = LiveCall(greeting="Greet the caller.", opening_clip=Clip(text=""))
    started(call)
    actions = call.event(type="error", event_id="e", error={
        "type": "invalid_request_error", "code": "invalid_fixture_audio", "message": "bad",
        "client_event_id": CLIP_EVENT_ID})
    assert any(isinstance(a, Log) and "opening clip not played" in a.message for a in actions)
    assert not any(isinstance(a, EndCall) for a in actions)  # the call goes on
    assert call.sent[-1]["content"] == "Greet the caller."
    assert turns(call.s.finish()) == []  # nothing played, nothing recorded


def test_a_client_delegation_is_declined_at_once_for_its_id() -> None:
    call = LiveCall()
    started(call)
    actions = call.event(type="session.delegation.created", event_id="e", offset_ms=10,
                         delegation={"id": "d7", "target": "client", "type": "delegation"})
    assert not any(isinstance(a, RunTools) for a in actions)
    (reply,) = call.sent
    assert reply == {"type": "session.thinking.append", "delegation_id": "d7",
                     "content": CLIENT_DELEGATION_REPLY}


def test_a_pause_longer_than_the_gap_splits_the_assistants_words_into_two_turns() -> None:
    call = LiveCall(gap_ms=800)
    started(call)
    call.event(type="session.output_audio.delta", delta=b64(3200))  # 400 ms
    call.event(type="session.output_transcript.delta", event_id="e", delta="First part.",
               start_ms=0, end_ms=400)
    call.event(type="session.output_transcript.delta", event_id="e", delta=" Still first.",
               start_ms=1200, end_ms=1500)  # 800 ms after: the same turn
    split = call.event(type="session.output_transcript.delta", event_id="e",
                       delta=" Second part.", start_ms=2301, end_ms=2600)  # 801 ms: a new one
    call.event(type="session.output_audio.delta", delta=b64(2400))  # its audio, 300 ms
    (first,) = turns(split + call.echo_all())
    assert (first.text, first.total_ms) == ("First part. Still first.", 400)
    (second,) = turns(call.s.finish())
    assert (second.role, second.text, second.total_ms) == ("assistant", "Second part.", 300)
