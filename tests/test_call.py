"""The sans-I/O call core: no sockets, no Django, no event loop."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from voiceconv.session import (
    ArmHangupDeadline,
    CallSession,
    EndCall,
    HangUp,
    Log,
    RecordBargeIn,
    RecordFirstAudio,
    RecordTurn,
    RecordUsage,
    RunTools,
    SendToRealtime,
    SendToTwilio,
    StartStream,
    StreamStart,
    ToolOutcome,
    Transfer,
    b64_decoded_len,
    estimate_heard,
)

SID = "MZ" + "a" * 32


def start_msg(**params: str) -> dict[str, Any]:
    return {
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": SID,
        "start": {
            "accountSid": "AC" + "b" * 32,
            "streamSid": SID,
            "callSid": "CA" + "c" * 32,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": params,
        },
    }


def out(call_id: str, name: str, output: str) -> ToolOutcome:
    return ToolOutcome(call_id, name, "{}", output)


def b64(n_bytes: int, fill: int = 0x55) -> str:
    return base64.b64encode(bytes([fill]) * n_bytes).decode()


def realtime_texts(actions: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(a.text) for a in actions if isinstance(a, SendToRealtime)]


def twilio_texts(actions: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(a.text) for a in actions if isinstance(a, SendToTwilio)]


def turns(actions: list[Any]) -> list[Any]:
    return [a.turn for a in actions if isinstance(a, RecordTurn)]


class Call:
    """A CallSession driven like the consumer drives it, keeping Twilio's mark queue."""

    def __init__(self, **kwargs: Any) -> None:
        self.s = CallSession(**kwargs)
        self.marks: list[str] = []
        self.now = 0
        (started,) = self.s.handle_twilio(start_msg(agent="1"))
        assert isinstance(started, StartStream)
        self.ready()

    def ready(self) -> list[Any]:
        return self.s.handle_realtime({"type": "session.updated", "session": {}})

    def frame(self, ms: int = 20) -> str | None:
        self.now += ms
        return self.s.twilio_media("//8=", self.now)

    def rt(self, event: dict[str, Any]) -> list[Any]:
        return self.s.handle_realtime(event)

    def delta(self, item: str, resp: str, n_bytes: int) -> list[Any]:
        actions = self.rt(
            {"type": "response.output_audio.delta", "item_id": item, "response_id": resp,
             "delta": b64(n_bytes)}
        )
        for msg in twilio_texts(actions):
            if msg["event"] == "mark":
                self.marks.append(msg["mark"]["name"])
        return actions

    def echo(self, count: int = 1) -> list[Any]:
        actions: list[Any] = []
        for _ in range(count):
            name = self.marks.pop(0)
            actions += self.s.handle_twilio(
                {"event": "mark", "streamSid": SID, "mark": {"name": name}}
            )
        return actions

    def response(self, resp: str, item: str) -> None:
        self.rt({"type": "response.created", "response": {"id": resp, "status": "in_progress"}})
        self.rt({"type": "response.output_item.added", "response_id": resp, "output_index": 0,
                 "item": {"id": item, "type": "message", "role": "assistant"}})

    def finish_item(self, resp: str, item: str, transcript: str) -> list[Any]:
        actions = self.rt({"type": "response.output_audio.done", "item_id": item,
                           "response_id": resp})
        actions += self.rt({"type": "response.output_audio_transcript.done", "item_id": item,
                            "response_id": resp, "transcript": transcript})
        actions += self.rt({"type": "response.done", "response": {
            "id": resp, "status": "completed", "output": [],
            "usage": {"input_tokens": 10, "output_tokens": 20,
                      "output_token_details": {"audio_tokens": 15, "text_tokens": 5}}}})
        return actions

    def speech_started(self) -> list[Any]:
        return self.rt({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0,
                        "item_id": "item_user"})


# ------------------------------------------------------------------------- basics


@pytest.mark.parametrize(
    ("b64_text", "expected"),
    [("", 0), ("AA==", 1), ("AAA=", 2), ("AAAA", 3), (b64(160), 160), (b64(8001), 8001)],
)
def test_b64_decoded_len(b64_text: str, expected: int) -> None:
    assert b64_decoded_len(b64_text) == expected
    assert len(base64.b64decode(b64_text)) == expected


def test_start_prebuilds_stream_messages_and_asks_for_realtime() -> None:
    s = CallSession()
    assert s.handle_twilio({"event": "connected", "protocol": "Call", "version": "1.0.0"}) == []
    assert s.handle_twilio(start_msg(call_token="t", agent="2")) == [StartStream(StreamStart(
        stream_sid=SID, call_sid="CA" + "c" * 32, account_sid="AC" + "b" * 32,
        custom_parameters={"call_token": "t", "agent": "2"}))]
    assert s.state.stream_sid == SID
    assert s.state.call_sid == "CA" + "c" * 32
    assert s.state.custom_parameters == {"call_token": "t", "agent": "2"}
    assert s.handle_twilio(start_msg()) == [
        Log("warning", "bad input from Twilio (second start): a second start message; ignored")]
    assert s.handle_twilio(start_msg()) == []  # each kind is logged once
    assert s.bad_input == {"second start": 2}


def test_caller_audio_is_buffered_until_session_updated_then_flushed_in_order() -> None:
    s = CallSession(early_audio_frames=3)
    s.handle_twilio(start_msg())
    for i, payload in enumerate(["AAAA", "AAAB", "AAAC", "AAAD"]):
        assert s.twilio_media(payload, 20 * (i + 1)) is None
    assert s.state.frames_dropped_early == 1
    actions = s.handle_realtime({"type": "session.updated", "session": {}})
    appends = realtime_texts(actions)
    assert [a["audio"] for a in appends if a["type"] == "input_audio_buffer.append"] == [
        "AAAB", "AAAC", "AAAD"]
    assert s.early_audio_sent() == []  # the buffer is sent: nothing more queued
    # afterwards every frame passes straight through, the same base64 string
    out = s.twilio_media("//79/Q==", 100)
    assert out is not None
    assert json.loads(out) == {"type": "input_audio_buffer.append", "audio": "//79/Q=="}


def test_greeting_is_one_response_create_with_instructions_and_greeting() -> None:
    s = CallSession(greeting="Say hello.", instructions="You are Ada.")
    s.handle_twilio(start_msg())
    sent = realtime_texts(s.handle_realtime({"type": "session.updated", "session": {}}))
    assert sent == [{"type": "response.create",
                     "response": {"instructions": "You are Ada.\n\nSay hello."}}]
    assert s.handle_realtime({"type": "session.updated", "session": {}}) == []


def test_no_greeting_means_waiting_for_the_caller() -> None:
    s = CallSession(greeting="")
    s.handle_twilio(start_msg())
    assert realtime_texts(s.handle_realtime({"type": "session.updated", "session": {}})) == []


def test_assistant_audio_passes_through_with_a_mark_per_chunk() -> None:
    c = Call()
    c.frame()
    c.response("resp_1", "item_1")
    delta = b64(800)
    actions = c.rt({"type": "response.output_audio.delta", "item_id": "item_1",
                    "response_id": "resp_1", "delta": delta})
    msgs = twilio_texts(actions)
    assert msgs[0] == {"event": "media", "streamSid": SID, "media": {"payload": delta}}
    assert msgs[1]["event"] == "mark" and msgs[1]["streamSid"] == SID
    assert RecordFirstAudio(20) in actions


# ------------------------------------------------------------------------- barge-in


def test_barge_in_truncates_at_what_was_played_by_marks() -> None:
    c = Call()
    c.frame()
    c.response("resp_1", "item_1")
    for _ in range(5):
        c.delta("item_1", "resp_1", 1600)  # 200 ms each, 1000 ms in all
    # Twilio plays 2 chunks (400 ms): their marks come back as call time passes
    for _ in range(20):
        c.frame()
    c.echo(2)
    actions = c.speech_started()
    tw = twilio_texts(actions)
    assert tw == [{"event": "clear", "streamSid": SID}]
    rt = realtime_texts(actions)
    assert rt == [{"type": "conversation.item.truncate", "item_id": "item_1",
                   "content_index": 0, "audio_end_ms": 400}]
    # The I/O layer times the reaction up to here: after the clear and the truncate.
    marker = next(i for i, a in enumerate(actions) if isinstance(a, RecordBargeIn))
    assert [type(a) for a in actions[:marker]].count(SendToRealtime) == 1
    assert isinstance(actions[0], SendToTwilio)
    assert sum(isinstance(a, RecordBargeIn) for a in actions) == 1


def test_barge_in_refines_by_call_time_since_the_last_echo_capped_by_next_mark() -> None:
    c = Call()
    c.frame()
    c.response("resp_1", "item_1")
    for _ in range(3):
        c.delta("item_1", "resp_1", 1600)
    c.echo(1)  # 200 ms played at call time 20
    for _ in range(5):
        c.frame()  # +100 ms
    rt = realtime_texts(c.speech_started())
    assert rt[0]["audio_end_ms"] == 300

    c2 = Call()
    c2.frame()
    c2.response("resp_1", "item_1")
    c2.delta("item_1", "resp_1", 1600)
    c2.delta("item_1", "resp_1", 800)
    c2.echo(1)
    for _ in range(50):
        c2.frame()  # a second later: capped at the next mark's end (300 ms)
    assert realtime_texts(c2.speech_started())[0]["audio_end_ms"] == 300


def test_first_chunk_without_echo_counts_from_when_it_started_playing() -> None:
    c = Call()
    c.frame()  # t=20
    c.response("resp_1", "item_1")
    c.delta("item_1", "resp_1", 4000)  # 500 ms, sent to an empty queue at t=20
    for _ in range(6):
        c.frame()  # t=140: 120 ms played
    assert realtime_texts(c.speech_started())[0]["audio_end_ms"] == 120


def test_no_clear_and_no_truncate_when_nothing_is_playing() -> None:
    c = Call()
    c.frame()
    c.response("resp_1", "item_1")
    c.delta("item_1", "resp_1", 800)
    c.finish_item("resp_1", "item_1", "Hi.")
    c.echo(1)  # everything played
    actions = c.speech_started()
    assert twilio_texts(actions) == []
    assert realtime_texts(actions) == []
    assert not any(isinstance(a, RecordBargeIn) for a in actions)  # no barge-in to time


def test_second_answer_after_first_played_truncates_from_its_own_start() -> None:
    """The ancestor's bug: a stale start point after the first answer played to the end."""
    c = Call()
    c.frame()
    c.response("resp_1", "item_1")
    for _ in range(10):
        c.delta("item_1", "resp_1", 1600)  # 2 s
    c.finish_item("resp_1", "item_1", "First answer.")
    for _ in range(100):
        c.frame()
    c.echo(10)  # all played by t=2020
    for _ in range(150):
        c.frame()  # 3 s of caller talk and silence: t=5020
    c.response("resp_2", "item_2")
    for _ in range(10):
        c.delta("item_2", "resp_2", 1600)
    for _ in range(10):
        c.frame()
    c.echo(1)  # the first 200 ms chunk has played
    for _ in range(5):
        c.frame()  # 300 ms of item_2 played
    rt = realtime_texts(c.speech_started())
    assert rt == [{"type": "conversation.item.truncate", "item_id": "item_2",
                   "content_index": 0, "audio_end_ms": 300}]


def test_echoes_flushed_by_clear_are_ignored_and_next_answer_is_tracked_fresh() -> None:
    c = Call()
    c.frame()
    c.response("resp_1", "item_1")
    for _ in range(4):
        c.delta("item_1", "resp_1", 1600)
    flushed = list(c.marks)
    c.marks.clear()
    c.speech_started()
    # in-flight deltas of the interrupted response are dropped
    assert c.delta("item_1", "resp_1", 1600) == []
    # Twilio echoes every flushed mark after clear: nothing happens
    for name in flushed:
        assert c.s.handle_twilio({"event": "mark", "streamSid": SID, "mark": {"name": name}}) == []
    # the next answer plays and is tracked from its own marks
    c.response("resp_2", "item_2")
    assert twilio_texts(c.delta("item_2", "resp_2", 1600))[0]["event"] == "media"
    c.delta("item_2", "resp_2", 1600)
    c.echo(1)
    rt = realtime_texts(c.speech_started())
    assert rt[0]["item_id"] == "item_2"
    assert rt[0]["audio_end_ms"] == 200


def test_barge_in_on_two_queued_items_truncates_the_later_one_at_zero() -> None:
    c = Call()
    c.frame()
    c.response("resp_1", "item_1")
    c.delta("item_1", "resp_1", 1600)
    c.finish_item("resp_1", "item_1", "One.")
    c.response("resp_2", "item_2")
    c.delta("item_2", "resp_2", 1600)
    c.echo(1)  # item_1 played; item_2 starts now
    c.frame()
    rt = realtime_texts(c.speech_started())
    assert [(e["item_id"], e["audio_end_ms"]) for e in rt] == [("item_2", 20)]


def test_interrupt_response_false_makes_the_agent_uninterruptible() -> None:
    c = Call(interrupt_response=False)
    c.frame()
    c.response("resp_1", "item_1")
    c.delta("item_1", "resp_1", 1600)
    assert c.speech_started() == []  # no clear, no truncate, no cancel
    assert c.delta("item_1", "resp_1", 1600) != []  # and the rest still plays


def test_speech_while_generating_but_nothing_queued_mutes_in_flight_audio() -> None:
    c = Call()
    c.frame()
    c.response("resp_1", "item_1")
    actions = c.speech_started()
    assert twilio_texts(actions) == []
    assert c.delta("item_1", "resp_1", 800) == []
    # the item had no audio sent: it is truncated at 0 when its audio ends
    rt = realtime_texts(c.rt({"type": "response.output_audio.done", "item_id": "item_1",
                              "response_id": "resp_1"}))
    assert rt == [{"type": "conversation.item.truncate", "item_id": "item_1",
                   "content_index": 0, "audio_end_ms": 0}]


# ------------------------------------------------------------------------- transcripts


def test_assistant_turn_recorded_when_fully_heard() -> None:
    c = Call()
    c.frame()
    c.response("resp_1", "item_1")
    c.delta("item_1", "resp_1", 1600)
    c.delta("item_1", "resp_1", 1600)
    actions = c.finish_item("resp_1", "item_1", "Hello there, how can I help?")
    assert turns(actions) == []  # still playing
    assert RecordUsage in [type(a) for a in actions]
    recorded = turns(c.echo(2))
    assert len(recorded) == 1
    t = recorded[0]
    assert (t.role, t.text, t.interrupted, t.heard_ms, t.total_ms) == (
        "assistant", "Hello there, how can I help?", False, 400, 400)


def test_interrupted_turn_keeps_text_heard_ms_and_heard_part() -> None:
    c = Call()
    c.frame()
    c.response("resp_1", "item_1")
    for _ in range(10):
        c.delta("item_1", "resp_1", 800)  # 1000 ms
    c.rt({"type": "response.output_audio_transcript.done", "item_id": "item_1",
          "response_id": "resp_1", "transcript": "one two three four five six seven eight"})
    c.echo(5)  # 500 ms
    recorded = turns(c.speech_started())
    assert len(recorded) == 1
    t = recorded[0]
    assert t.interrupted and t.heard_ms == 500 and t.total_ms == 1000
    assert t.heard_text == "one two three four"


def test_caller_turn_and_response_latency() -> None:
    c = Call()
    for _ in range(10):
        c.frame()  # t = 200; input clock origin is t = 20
    c.rt({"type": "input_audio_buffer.speech_started", "audio_start_ms": 40, "item_id": "u1"})
    for _ in range(40):
        c.frame()  # t = 1000
    c.rt({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 700, "item_id": "u1"})
    recorded = turns(c.rt({"type": "conversation.item.input_audio_transcription.completed",
                           "item_id": "u1", "content_index": 0, "transcript": " Hi there "}))
    assert recorded[0].role == "caller" and recorded[0].text == "Hi there"
    assert recorded[0].offset_ms == 200
    for _ in range(5):
        c.frame()  # t = 1100
    c.response("resp_1", "item_1")
    c.delta("item_1", "resp_1", 800)
    c.finish_item("resp_1", "item_1", "Hello.")
    t = turns(c.echo(1))[0]
    # speech stopped at input ms 700 = call ms 720 → first audio at 1100
    assert t.latency_ms == 380


def test_finish_records_what_was_heard_of_an_unfinished_turn() -> None:
    c = Call()
    c.frame()
    c.response("resp_1", "item_1")
    for _ in range(10):
        c.delta("item_1", "resp_1", 800)
    c.rt({"type": "response.output_audio_transcript.done", "item_id": "item_1",
          "response_id": "resp_1", "transcript": "a b c d e f g h i j"})
    c.echo(3)
    recorded = turns(c.s.finish())
    assert len(recorded) == 1
    assert recorded[0].heard_ms == 300 and recorded[0].interrupted


@pytest.mark.parametrize(
    ("text", "heard", "total", "expected"),
    [
        ("hello world", 0, 1000, ""),
        ("hello world", 1000, 1000, "hello world"),
        ("hello world", 2000, 1000, "hello world"),
        ("hello world", 500, 1000, "hello"),
        ("hello world", 300, 1000, "hello"),  # a word counts once its middle was played
        ("hello world", 200, 1000, ""),
        ("one two three four", 600, 1000, "one two three"),
        ("", 500, 1000, ""),
        ("abc", 500, 0, "abc"),  # unknown total: the whole text
    ],
)
def test_estimate_heard_cuts_on_word_boundaries(
    text: str, heard: int, total: int, expected: str
) -> None:
    assert estimate_heard(text, heard, total) == expected


# ------------------------------------------------------------------------- DTMF, tools, end


def test_dtmf_is_recorded_and_forwarded_as_a_user_item_then_a_response() -> None:
    c = Call()
    actions = c.s.handle_twilio(
        {"event": "dtmf", "streamSid": SID, "dtmf": {"track": "inbound_track", "digit": "5"}})
    assert turns(actions)[0].role == "dtmf" and turns(actions)[0].text == "5"
    rt = realtime_texts(actions)
    assert rt[0]["type"] == "conversation.item.create"
    assert "5" in rt[0]["item"]["content"][0]["text"]
    assert rt[1] == {"type": "response.create"}


def test_dtmf_not_forwarded_when_disabled() -> None:
    c = Call(forward_dtmf=False)
    actions = c.s.handle_twilio(
        {"event": "dtmf", "streamSid": SID, "dtmf": {"track": "inbound_track", "digit": "#"}})
    assert realtime_texts(actions) == []
    assert turns(actions)[0].text == "#"


def test_function_calls_fan_in_to_one_response_create() -> None:
    c = Call()
    c.response("resp_1", "item_1")
    actions = c.rt({"type": "response.done", "response": {"id": "resp_1", "status": "completed",
        "output": [
            {"type": "function_call", "id": "fc1", "call_id": "call_a", "name": "x",
             "arguments": "{}"},
            {"type": "function_call", "id": "fc2", "call_id": "call_b", "name": "y",
             "arguments": "{\"n\": 1}"}]}})
    run = [a for a in actions if isinstance(a, RunTools)]
    assert len(run) == 1 and [c_.call_id for c_ in run[0].calls] == ["call_a", "call_b"]
    rt = realtime_texts(c.s.tool_results([out("call_a", "x", '"1"'), out("call_b", "y", '"2"')]))
    assert [e["type"] for e in rt] == [
        "conversation.item.create", "conversation.item.create", "response.create"]
    assert rt[0]["item"] == {"type": "function_call_output", "call_id": "call_a", "output": '"1"'}


def test_tool_output_while_a_response_is_active_defers_response_create() -> None:
    c = Call()
    c.rt({"type": "response.done", "response": {"id": "r1", "status": "completed", "output": [
        {"type": "function_call", "id": "fc1", "call_id": "call_a", "name": "x",
         "arguments": "{}"}]}})
    c.response("resp_2", "item_2")  # the caller spoke meanwhile
    rt = realtime_texts(c.s.tool_results([out("call_a", "x", "{}")]))
    assert [e["type"] for e in rt] == ["conversation.item.create"]
    rt = realtime_texts(c.rt({"type": "response.done", "response": {
        "id": "resp_2", "status": "completed", "output": []}}))
    assert rt == [{"type": "response.create"}]


def test_cancelled_response_function_calls_are_not_run() -> None:
    c = Call()
    actions = c.rt({"type": "response.done", "response": {"id": "r1", "status": "cancelled",
        "output": [{"type": "function_call", "id": "fc1", "call_id": "call_a", "name": "x",
                    "arguments": "{}"}]}})
    assert not [a for a in actions if isinstance(a, RunTools)]


def test_hang_up_waits_until_the_goodbye_has_been_heard() -> None:
    c = Call()
    c.rt({"type": "response.done", "response": {"id": "r1", "status": "completed", "output": [
        {"type": "function_call", "id": "fc1", "call_id": "call_a", "name": "end_call",
         "arguments": "{}"}]}})
    # the tool is still running: only the deadline is armed
    assert c.s.request_hangup("agent_ended") == [ArmHangupDeadline()]
    actions = c.s.tool_results([out("call_a", "end_call", '{"status": "ending"}')])
    assert not [a for a in actions if isinstance(a, HangUp)]
    c.response("resp_2", "item_2")
    c.delta("item_2", "resp_2", 1600)
    c.delta("item_2", "resp_2", 1600)
    assert not [a for a in c.finish_item("resp_2", "item_2", "Goodbye!") if isinstance(a, HangUp)]
    assert not [a for a in c.echo(1) if isinstance(a, HangUp)]  # mid-goodbye
    assert HangUp("agent_ended") in c.echo(1)


def test_transfer_after_goodbye() -> None:
    c = Call()
    actions = c.s.request_transfer("+14155550100")
    assert actions == [ArmHangupDeadline(), Transfer("+14155550100")]


def test_stop_ends_the_call() -> None:
    c = Call()
    assert c.s.handle_twilio({"event": "stop", "streamSid": SID, "stop": {}}) == [
        EndCall("caller_hung_up")]


@pytest.mark.parametrize(
    ("code", "ends"),
    [
        ("conversation_already_has_active_response", False),
        ("response_cancel_not_active", False),
        ("server_error", False),
        ("session_expired", False),  # the socket closes next and the bridge reconnects
        ("insufficient_quota", True),
    ],
)
def test_realtime_errors(code: str, ends: bool) -> None:
    c = Call()
    actions = c.rt({"type": "error", "error": {"type": "x", "code": code, "message": "m"}})
    assert any(isinstance(a, EndCall) for a in actions) is ends
    assert any(isinstance(a, Log) for a in actions)


def test_unknown_events_are_harmless() -> None:
    c = Call()
    assert c.rt({"type": "something.new", "x": 1}) == []
    assert c.rt({"no": "type"})[0].level == "warning"
    assert c.s.handle_twilio({"event": "bogus"})[0].level == "warning"
    bad_mark = {"event": "mark", "mark": {"name": "not-a-number"}}
    assert c.s.handle_twilio(bad_mark)[0].level == "debug"


def test_reconnect_buffers_audio_reseeds_history_and_never_truncates_old_items() -> None:
    c = Call(greeting="Say hi.")
    c.frame()
    c.rt({"type": "input_audio_buffer.speech_started", "item_id": "u1", "audio_start_ms": 0})
    c.rt({"type": "conversation.item.input_audio_transcription.completed", "item_id": "u1",
          "content_index": 0, "transcript": "Where is my order?"})
    c.response("resp_1", "item_1")
    c.delta("item_1", "resp_1", 800)
    c.finish_item("resp_1", "item_1", "It shipped yesterday.")
    c.echo(1)
    c.response("resp_2", "item_2")
    c.delta("item_2", "resp_2", 1600)  # still queued at Twilio when the socket drops

    c.s.realtime_lost()
    assert c.frame() is None  # buffered while the new session opens
    seeds = [json.loads(e) for e in c.s.reseed_events()]
    assert [(e["item"]["role"], e["item"]["content"][0]) for e in seeds] == [
        ("user", {"type": "input_text", "text": "Where is my order?"}),
        ("assistant", {"type": "output_text", "text": "It shipped yesterday."}),
    ]
    actions = c.ready()
    rt = realtime_texts(actions)
    assert [e["type"] for e in rt] == ["input_audio_buffer.append"]  # no second greeting
    # Barge-in on audio of the old session: clear Twilio, but no truncate of an unknown item.
    actions = c.speech_started()
    assert twilio_texts(actions) == [{"event": "clear", "streamSid": SID}]
    assert realtime_texts(actions) == []


def test_tool_outputs_of_a_lost_session_reach_the_new_one_never_run_twice() -> None:
    c = Call()
    c.rt({"type": "response.done", "response": {"id": "r1", "status": "completed", "output": [
        {"type": "function_call", "id": "fc1", "call_id": "call_a", "name": "x",
         "arguments": "{}"}]}})
    c.s.realtime_lost()
    seeds = [json.loads(e)["item"] for e in c.s.reseed_events()]
    assert seeds == [{"type": "function_call", "call_id": "call_a", "name": "x",
                      "arguments": "{}"}]
    assert realtime_texts(c.ready()) == []  # the tool is still running: nothing owed yet
    actions = c.s.tool_results([out("call_a", "x", '{"n":1}')])
    assert [e["type"] for e in realtime_texts(actions)] == [
        "conversation.item.create", "response.create"]
    assert realtime_texts(actions)[0]["item"] == {
        "type": "function_call_output", "call_id": "call_a", "output": '{"n":1}'}
    assert not any(isinstance(a, RunTools) for a in actions)


def test_tool_outputs_nobody_asked_for_are_dropped() -> None:
    c = Call()
    actions = c.s.tool_results([out("call_z", "x", "{}")])
    assert [e["type"] for e in realtime_texts(actions)] == ["response.create"]
    assert any(isinstance(a, Log) and "dropped" in a.message for a in actions)


def limited(**kwargs: int) -> Call:
    from voiceconv.session import Limits

    return Call(greeting="", limits=Limits(**kwargs))


def run_until(c: Call, ms: int) -> list[Any]:
    """Send frames until call time ``ms``, calling on_clock as the consumer does."""
    actions: list[Any] = []
    while c.now < ms:
        c.frame()
        if c.now >= c.s.deadline_ms:
            actions += c.s.on_clock()
    return actions


def test_idle_caller_is_reprompted_then_the_call_ends_after_a_goodbye() -> None:
    c = limited(idle_reprompt_ms=5000, idle_hangup_ms=8000)
    assert realtime_texts(run_until(c, 4900)) == []
    actions = run_until(c, 5100)
    reprompt = realtime_texts(actions)
    assert len(reprompt) == 1 and "still there" in reprompt[0]["response"]["instructions"]
    c.response("resp_r", "item_r")
    c.delta("item_r", "resp_r", 800)
    c.finish_item("resp_r", "item_r", "Are you still there?")
    c.echo(1)
    assert realtime_texts(run_until(c, 5100 + 7900)) == []
    actions = run_until(c, 5100 + 8200)
    goodbye = realtime_texts(actions)
    assert "goodbye" in goodbye[0]["response"]["instructions"]
    assert not [a for a in actions if isinstance(a, HangUp)]  # not before the goodbye is heard
    c.response("resp_g", "item_g")
    c.delta("item_g", "resp_g", 800)
    c.finish_item("resp_g", "item_g", "Goodbye.")
    assert HangUp("idle") in c.echo(1)


def test_caller_speech_resets_the_idle_clock() -> None:
    c = limited(idle_reprompt_ms=5000, idle_hangup_ms=8000)
    run_until(c, 4000)
    c.speech_started()
    c.rt({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 0, "item_id": "u"})
    assert realtime_texts(run_until(c, 8000)) == []
    assert "still there" in realtime_texts(run_until(c, 9100))[0]["response"]["instructions"]


def test_idle_clock_waits_while_the_agent_talks() -> None:
    c = limited(idle_reprompt_ms=5000)
    c.response("resp_1", "item_1")
    c.delta("item_1", "resp_1", 8000 * 8)  # 8 s of audio queued at Twilio
    assert realtime_texts(run_until(c, 7000)) == []


def test_long_call_is_warned_then_ended() -> None:
    c = limited(max_call_ms=120_000, warning_ms=60_000)
    assert realtime_texts(run_until(c, 59_000)) == []
    warn = realtime_texts(run_until(c, 60_100))
    assert "minute" in warn[0]["response"]["instructions"]
    c.rt({"type": "response.created", "response": {"id": "r_w"}})
    c.rt({"type": "response.done", "response": {"id": "r_w", "status": "completed"}})
    actions = run_until(c, 120_100)
    assert "goodbye" in realtime_texts(actions)[0]["response"]["instructions"]
    c.rt({"type": "response.created", "response": {"id": "r_g"}})
    done = c.rt({"type": "response.done", "response": {"id": "r_g", "status": "completed"}})
    assert HangUp("limit") in done


def test_caller_items_awaiting_their_transcript_are_tracked() -> None:
    c = Call()
    c.rt({"type": "input_audio_buffer.committed", "item_id": "u1", "previous_item_id": None})
    c.rt({"type": "input_audio_buffer.committed", "item_id": "u2", "previous_item_id": "u1"})
    assert c.s.pending_transcripts == {"u1", "u2"}
    c.rt({"type": "conversation.item.input_audio_transcription.completed", "item_id": "u1",
          "content_index": 0, "transcript": "hi"})
    c.rt({"type": "conversation.item.input_audio_transcription.failed", "item_id": "u2",
          "content_index": 0, "error": {"message": "nope"}})
    assert c.s.pending_transcripts == set()
    off = Call(transcription=False)
    off.rt({"type": "input_audio_buffer.committed", "item_id": "u1"})
    assert off.s.pending_transcripts == set()
