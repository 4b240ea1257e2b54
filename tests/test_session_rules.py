"""The conversation rules of the call core (issue 9), one or more tests a rule; no sockets."""

from __future__ import annotations

import json
from typing import Any

from tests.test_call import SID, Call, out, realtime_texts, run_until, turns, twilio_texts
from voiceconv.session import (
    ArmHangupDeadline,
    CallSession,
    EndCall,
    FlushEarlyAudio,
    HangUp,
    Limits,
    Log,
    RunTools,
    SendToRealtime,
    ToolOutcome,
    Transfer,
)


def limited(**kwargs: Any) -> Call:
    return Call(greeting="", limits=Limits(**kwargs))


def creates(actions: list[Any]) -> list[dict[str, Any]]:
    return [e for e in realtime_texts(actions) if e["type"] == "response.create"]


def done(c: Call, resp: str, output: list[dict[str, Any]] | None = None) -> list[Any]:
    return c.rt({"type": "response.done",
                 "response": {"id": resp, "status": "completed", "output": output or []}})


def function_call(call_id: str, name: str = "lookup") -> dict[str, Any]:
    return {"type": "function_call", "id": "fc_" + call_id, "call_id": call_id, "name": name,
            "arguments": "{}"}


# ------------------------------------------------------------ 1. a talking caller is never idle


def test_a_caller_reading_out_a_long_address_is_not_reprompted_nor_hung_up() -> None:
    c = limited(idle_reprompt_ms=5000, idle_hangup_ms=5000)
    run_until(c, 1000)
    c.speech_started()
    # 30 s of continuous speech: one speech_started, no speech_stopped yet
    assert realtime_texts(run_until(c, 31_000)) == []
    c.rt({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 30_000, "item_id": "u"})
    assert realtime_texts(run_until(c, 35_000)) == []  # idle counts from when they stopped
    assert "still there" in creates(run_until(c, 36_100))[0]["response"]["instructions"]


def test_a_committed_turn_counts_as_activity() -> None:
    c = limited(idle_reprompt_ms=5000)
    run_until(c, 4900)
    c.rt({"type": "input_audio_buffer.committed", "item_id": "u1"})
    assert realtime_texts(run_until(c, 9800)) == []


# ------------------------------------------------------------ 2. reconnect restores the call


def test_an_answer_still_playing_at_the_drop_is_reseeded_as_heard_so_far() -> None:
    c = Call()
    c.frame()
    c.rt({"type": "conversation.item.input_audio_transcription.completed", "item_id": "u1",
          "content_index": 0, "transcript": "Where is my order?"})
    c.response("resp_1", "item_1")
    for _ in range(4):
        c.delta("item_1", "resp_1", 8000)  # 4 s of audio
    c.rt({"type": "response.output_audio_transcript.done", "item_id": "item_1",
          "response_id": "resp_1", "transcript": "one two three four five six seven eight"})
    run_until(c, 1020)
    c.echo(1)  # the first second has played
    run_until(c, 2020)  # 2 s of it played when the socket drops
    c.s.realtime_lost()
    seeds = [json.loads(e)["item"] for e in c.s.reseed_events()]
    assert [(s["role"], s["content"][0]["text"]) for s in seeds] == [
        ("user", "Where is my order?"), ("assistant", "one two three four")]
    # the answer was (being) given: the new session is not asked to answer again
    assert creates(c.ready()) == []
    # it is not added a second time when it finishes playing
    c.finish_item("resp_1", "item_1", "one two three four five six seven eight")
    c.echo(3)
    assert len(c.s.reseed_events()) == 2


def test_an_unanswered_caller_turn_is_answered_by_the_new_session() -> None:
    c = Call()
    c.frame()
    c.rt({"type": "conversation.item.input_audio_transcription.completed", "item_id": "u1",
          "content_index": 0, "transcript": "What time is it?"})
    c.rt({"type": "response.created", "response": {"id": "resp_1"}})
    c.s.realtime_lost()  # dropped between the question and the answer
    assert not c.s.state.response_active  # nothing stays "response active"
    assert len(creates(c.ready())) == 1


def test_a_turn_dropped_before_its_transcript_is_asked_for_again_by_the_new_session() -> None:
    c = Call()
    c.frame()
    c.rt({"type": "input_audio_buffer.committed", "item_id": "u1", "previous_item_id": None})
    c.s.realtime_lost()  # the words went with the old session: no transcript, no answer
    asked = creates(c.ready())
    assert len(asked) == 1
    assert "say it again" in asked[0]["response"]["instructions"]


def test_a_turn_whose_answer_had_started_is_not_asked_for_again() -> None:
    c = Call()
    c.frame()
    c.rt({"type": "input_audio_buffer.committed", "item_id": "u1", "previous_item_id": None})
    c.response("resp_1", "item_a")  # the answer had begun before the drop
    c.s.realtime_lost()
    assert not any("say it again" in str(r) for r in creates(c.ready()))


# ------------------------------------------------------------ 3. several items per response


def test_two_items_of_one_response_play_in_order_and_barge_in_truncates_the_one_playing() -> None:
    c = Call()
    c.frame()
    c.response("resp_1", "item_a")  # the preamble
    c.delta("item_a", "resp_1", 1600)
    c.rt({"type": "response.output_item.added", "response_id": "resp_1", "output_index": 1,
          "item": {"id": "item_b", "type": "message", "role": "assistant"}})
    c.delta("item_b", "resp_1", 1600)  # before item_a's audio is done
    c.delta("item_b", "resp_1", 1600)
    c.rt({"type": "response.output_audio_transcript.done", "item_id": "item_a",
          "response_id": "resp_1", "transcript": "Let me check."})
    c.rt({"type": "response.output_audio.done", "item_id": "item_a", "response_id": "resp_1"})
    recorded = turns(c.echo(1))  # item_a fully heard
    assert [(t.item_id, t.interrupted) for t in recorded] == [("item_a", False)]
    c.rt({"type": "response.output_audio_transcript.done", "item_id": "item_b",
          "response_id": "resp_1", "transcript": "Your order shipped yesterday."})
    run_until(c, c.now + 100)
    actions = c.speech_started()
    truncs = [e for e in realtime_texts(actions) if e["type"] == "conversation.item.truncate"]
    assert [(e["item_id"], e["audio_end_ms"]) for e in truncs] == [("item_b", 100)]
    (b,) = turns(actions)
    assert b.item_id == "item_b" and b.interrupted and b.heard_ms == 100 and b.total_ms == 400


# ------------------------------------------------------------ 4. transfers are announced


def test_a_transfer_is_announced_and_heard_before_twilio_dials() -> None:
    c = Call()
    c.frame()
    done(c, "r1", [function_call("call_t", "transfer_call")])
    assert c.s.request_transfer("+14155550100") == [ArmHangupDeadline()]
    actions = c.s.tool_results([out("call_t", "transfer_call", '{"status":"transferring"}')])
    assert len(creates(actions)) == 1  # the model says "Putting you through now"
    assert not any(isinstance(a, Transfer) for a in actions)
    c.response("r2", "item_2")
    c.delta("item_2", "r2", 1600)
    assert not any(isinstance(a, Transfer) for a in c.finish_item("r2", "item_2", "Putting you "
                                                                  "through now."))
    assert Transfer("+14155550100") in c.echo(1)


def test_the_end_reason_is_transferred_when_twilio_stops_the_stream_first() -> None:
    c = Call()
    c.s.request_transfer("+14155550100")
    assert c.s.handle_twilio({"event": "stop", "streamSid": SID}) == [EndCall("transferred")]


# ------------------------------------------------------------ 5. every configuration works


def test_create_response_false_the_bridge_answers_each_committed_turn() -> None:
    c = Call(auto_response=False)
    c.frame()
    c.speech_started()
    c.rt({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 900, "item_id": "u1"})
    assert len(creates(c.rt({"type": "input_audio_buffer.committed", "item_id": "u1"}))) == 1


def test_create_response_true_leaves_answering_to_the_server() -> None:
    c = Call()
    assert creates(c.rt({"type": "input_audio_buffer.committed", "item_id": "u1"})) == []


# ------------------------------------------------------------ 6. tools, collisions and hang-ups

COLLISION = {"type": "error", "error": {"type": "invalid_request_error",
                                        "code": "conversation_already_has_active_response",
                                        "message": "Conversation already has an active response"}}


def test_a_tool_output_that_met_a_response_collision_is_answered_after_it() -> None:
    c = Call()
    done(c, "r1", [function_call("call_a")])
    actions = c.s.tool_results([out("call_a", "lookup", "{}")])
    assert len(creates(actions)) == 1
    # the server had started a response we had not seen yet
    assert creates(c.rt(COLLISION)) == []
    c.rt({"type": "response.created", "response": {"id": "r_other"}})
    assert creates(c.rt({"type": "response.output_item.added", "response_id": "r_other",
                         "item": {"id": "i_o", "type": "message", "role": "assistant"}})) == []
    assert len(creates(done(c, "r_other"))) == 1  # asked again once it is done
    c.rt({"type": "response.created", "response": {"id": "r_again"}})
    assert creates(done(c, "r_again")) == []  # and only once


def test_a_collision_seen_after_the_other_response_was_created_is_answered_when_it_ends() -> None:
    c = Call()
    done(c, "r1", [function_call("call_a")])
    c.rt({"type": "response.created", "response": {"id": "r_vad"}})  # the caller's turn
    assert len(creates(c.s.tool_results([out("call_a", "lookup", "{}")]))) == 0  # queued
    c.rt(COLLISION)  # nothing was sent, nothing to ask again
    resent = c.rt({"type": "response.done", "response": {
        "id": "r_vad", "status": "cancelled", "output": [],
        "status_details": {"type": "cancelled", "reason": "turn_detected"}}})
    assert len(creates(resent)) == 1  # the output is answered once that one ends
    c2 = Call()
    done(c2, "r1", [function_call("call_b")])
    assert len(creates(c2.s.tool_results([out("call_b", "lookup", "{}")]))) == 1
    c2.rt({"type": "response.created", "response": {"id": "r_vad"}})  # seen before the error
    c2.rt(COLLISION)
    assert len(creates(done(c2, "r_vad"))) == 1


def test_a_holding_line_that_met_a_collision_is_dropped_and_the_answer_still_comes() -> None:
    c = Call()
    done(c, "r1", [function_call("call_a")])
    assert len(creates(c.s.holding_line("One moment please."))) == 1
    c.rt(COLLISION)  # the model is talking anyway: no holding line after the answer
    c.rt({"type": "response.created", "response": {"id": "r_other"}})
    assert creates(c.s.tool_results([out("call_a", "lookup", "{}")])) == []
    asked = creates(done(c, "r_other"))
    assert asked == [{"type": "response.create"}]  # the answer, not the holding line
    c.rt({"type": "response.created", "response": {"id": "r_answer"}})
    assert creates(done(c, "r_answer")) == []


def test_a_call_hung_up_while_a_tool_runs_records_the_invocation_as_cancelled() -> None:
    c = Call()
    done(c, "r1", [function_call("call_a"), function_call("call_b", "book")])
    assert c.s.state.tools_running == 2
    assert [r.call_id for r in c.s.cancelled_tools()] == ["call_a", "call_b"]
    c.s.handle_twilio({"event": "stop", "streamSid": SID})
    (a, b) = turns(c.s.finish())
    assert (a.role, a.item_id) == ("tool", "fc_call_a")
    assert a.text.startswith("lookup({}) → cancelled")
    assert b.text.startswith("book({}) → cancelled")
    assert c.s.state.tools_running == 0
    assert turns(c.s.finish()) == []  # once


def test_a_tool_that_finished_as_the_call_ended_is_recorded_with_its_output() -> None:
    c = Call()
    done(c, "r1", [function_call("call_a"), function_call("call_b")])
    ended = c.s.tools_ended([out("call_a", "lookup", '{"ok":true}'),
                             ToolOutcome("call_b", "lookup", "{}", "x", error="cancelled")])
    assert [t.text for t in turns(ended)] == ['lookup({}) → {"ok":true}',
                                              "lookup({}) → cancelled"]
    assert realtime_texts(ended) == []  # nothing goes to OpenAI any more
    assert turns(c.s.finish()) == []  # each recorded once


# ------------------------------------------------------------ 7. limits hold


def test_the_end_of_call_warning_is_queued_while_a_response_is_active() -> None:
    c = limited(max_call_ms=120_000, warning_ms=60_000)
    run_until(c, 59_000)
    c.rt({"type": "response.created", "response": {"id": "r1"}})
    assert creates(run_until(c, 60_100)) == []  # not skipped: owed
    warn = creates(done(c, "r1"))
    assert "minute" in warn[0]["response"]["instructions"]


def test_a_goodbye_owed_behind_an_active_response_is_said_before_the_hang_up() -> None:
    c = limited(max_call_ms=2_000, warning_ms=1_000)
    c.rt({"type": "response.created", "response": {"id": "r1"}})
    actions = run_until(c, 2_100)  # warning and goodbye both fall due while r1 is active
    assert ArmHangupDeadline() in actions  # every hang-up the core starts has a deadline
    assert creates(actions) == [] and not any(isinstance(a, HangUp) for a in actions)
    warning = done(c, "r1")
    assert "minute" in creates(warning)[0]["response"]["instructions"]
    c.rt({"type": "response.created", "response": {"id": "r_w"}})
    goodbye = done(c, "r_w")
    assert "goodbye" in creates(goodbye)[0]["response"]["instructions"]
    assert not any(isinstance(a, HangUp) for a in goodbye)
    c.rt({"type": "response.created", "response": {"id": "r_g"}})
    assert HangUp("limit") in done(c, "r_g")


def test_a_hang_up_past_its_deadline_ends_the_call_whatever_plays() -> None:
    c = Call()
    c.response("r1", "item_1")
    c.delta("item_1", "r1", 8000)
    assert c.s.request_hangup() == [ArmHangupDeadline()]
    actions = c.s.hangup_overdue()
    assert HangUp("agent_ended") in actions and any(isinstance(a, Log) for a in actions)
    assert c.s.hangup_overdue() == []  # once


# ------------------------------------------------------------ 8. errors that end a call apologise


def test_errors_that_end_the_call_ask_for_the_apology() -> None:
    for code in ("insufficient_quota", "invalid_api_key"):
        c = Call()
        actions = c.rt({"type": "error", "error": {"type": "x", "code": code, "message": "m"}})
        ends = [a for a in actions if isinstance(a, EndCall)]
        assert ends and ends[0].apologise and ends[0].reason == "openai_error"


def test_a_bad_session_option_at_start_plays_the_apology_but_not_mid_call() -> None:
    s = CallSession()
    s.handle_twilio({"event": "start", "streamSid": SID, "start": {
        "streamSid": SID, "callSid": "CA1", "accountSid": "AC1", "customParameters": {}}})
    bad = {"type": "error", "error": {"type": "invalid_request_error", "code": "unknown_parameter",
                                      "message": "Unknown parameter: 'session.voicee'.",
                                      "param": "session.voicee"}}
    ends = [a for a in s.handle_realtime(bad) if isinstance(a, EndCall)]
    assert ends == [EndCall("openai_error", ends[0].error, apologise=True)]
    assert "voicee" in ends[0].error
    c = Call()  # once the session is ready, a refused option of a later event is logged only
    assert not any(isinstance(a, EndCall) for a in c.rt(bad))


# ------------------------------------------------------------ 9. key presses


def test_digits_in_quick_succession_reach_the_model_as_one_item_after_the_pause() -> None:
    c = Call(dtmf_pause_ms=1500)
    run_until(c, 1000)
    sent: list[Any] = []
    for digit in "1234":
        sent += c.s.handle_twilio({"event": "dtmf", "streamSid": SID,
                                   "dtmf": {"track": "inbound_track", "digit": digit}})
        sent += run_until(c, c.now + 400)
    assert [t.text for t in turns(sent)] == list("1234")  # each key is in the transcript
    assert realtime_texts(sent) == []  # but the model has heard nothing yet
    flushed = run_until(c, c.now + 1200)
    items = [e for e in realtime_texts(flushed) if e["type"] == "conversation.item.create"]
    assert len(items) == 1 and "1234" in items[0]["item"]["content"][0]["text"]
    assert len(creates(flushed)) == 1


def test_without_a_pause_each_key_goes_at_once() -> None:
    c = Call(dtmf_pause_ms=0)
    actions = c.s.handle_twilio({"event": "dtmf", "streamSid": SID, "dtmf": {"digit": "5"}})
    assert any(isinstance(a, SendToRealtime) for a in actions)
    assert not any(isinstance(a, RunTools) for a in actions)
    assert twilio_texts(actions) == []


# ------------------------------------------------------------ 13. early audio stays in order


def test_live_audio_arriving_while_early_audio_is_sent_queues_behind_it() -> None:
    s = CallSession(early_audio_frames=50)
    s.handle_twilio({"event": "start", "streamSid": SID, "start": {
        "streamSid": SID, "callSid": "CA1", "accountSid": "AC1", "customParameters": {}}})
    sent: list[str] = []  # what reaches OpenAI, in order

    def frame(payload: str, ms: int) -> None:
        out = s.receive_twilio(json.dumps({"event": "media", "streamSid": SID, "media": {
            "track": "inbound", "chunk": "1", "timestamp": str(ms), "payload": payload}}))
        if isinstance(out, str):
            if out:
                sent.append(json.loads(out)["audio"])
        else:
            sent.extend(json.loads(a.text)["audio"] for a in out if isinstance(a, SendToRealtime))

    for n in range(5):
        frame(f"E{n}AA", 20 * (n + 1))  # the session is not ready: buffered
    assert sent == []
    flush = s.handle_realtime({"type": "session.updated", "session": {}})
    assert flush[-1] == FlushEarlyAudio()
    # (the session's readiness is also time-stamped: only the sends matter here)
    flush = [a for a in flush[:-1] if isinstance(a, SendToRealtime)] + [flush[-1]]
    # The Realtime task awaits each send: live frames arrive before the flush is through...
    sent.append(json.loads(flush[0].text)["audio"])
    for n in range(3):
        frame(f"L{n}AA", 120 + 20 * n)
    assert sent == ["E0AA"]  # ... and do not overtake the early audio
    sent += [json.loads(a.text)["audio"] for a in flush[1:-1]]
    more = s.early_audio_sent()  # the FlushEarlyAudio action: those that waited go next
    assert more[-1] == FlushEarlyAudio()
    frame("L3AA", 180)  # still flushing: it waits too
    sent += [json.loads(a.text)["audio"] for a in more[:-1]]
    last = s.early_audio_sent()
    sent += [json.loads(a.text)["audio"] for a in last if isinstance(a, SendToRealtime)]
    assert s.early_audio_sent() == []  # nothing waits any more
    frame("L4AA", 200)  # the fast path again
    assert isinstance(s.receive_twilio(json.dumps({"event": "media", "streamSid": SID, "media": {
        "timestamp": "220", "payload": "L5AA"}})), str)
    assert sent == ["E0AA", "E1AA", "E2AA", "E3AA", "E4AA", "L0AA", "L1AA", "L2AA", "L3AA",
                    "L4AA"]


def test_a_caller_stream_faster_than_the_flush_is_taken_over_by_the_twilio_side() -> None:
    s = CallSession(early_audio_frames=500)
    s.handle_twilio({"event": "start", "streamSid": SID, "start": {
        "streamSid": SID, "callSid": "CA1", "accountSid": "AC1", "customParameters": {}}})
    now = 0

    def frame() -> Any:
        nonlocal now
        now += 20
        return s.receive_twilio(json.dumps({"event": "media", "streamSid": SID, "media": {
            "timestamp": str(now), "payload": f"{now:04d}"}}))

    frame()
    actions = s.handle_realtime({"type": "session.updated", "session": {}})
    sent = [json.loads(a.text)["audio"] for a in actions if isinstance(a, SendToRealtime)]
    while FlushEarlyAudio() in actions:  # every round, two more frames arrive
        assert frame() == "" and frame() == ""
        actions = s.early_audio_sent()
        sent += [json.loads(a.text)["audio"] for a in actions if isinstance(a, SendToRealtime)]
    out = frame()  # the Twilio side takes the rest along, in order
    sent += [json.loads(a.text)["audio"] for a in out if isinstance(a, SendToRealtime)]
    assert isinstance(frame(), str)  # then the fast path
    assert sent == [f"{ms:04d}" for ms in range(20, now, 20)]


def test_a_frame_that_could_not_be_sent_is_not_overtaken_by_the_next() -> None:
    c = Call()
    first = c.frame()
    assert first is not None
    c.s.requeue_audio(first)  # the send failed: the connection is going
    again = c.s.twilio_media("//79", c.now + 20)
    assert again is None  # queued behind the frame that failed
    drained = c.s.handle_twilio({"event": "media", "streamSid": SID, "media": {
        "timestamp": str(c.now + 40), "payload": "//7+"}})
    assert [json.loads(a.text)["audio"] for a in drained if isinstance(a, SendToRealtime)] == [
        "//8=", "//79", "//7+"]


def test_a_drop_during_the_flush_keeps_the_rest_for_the_next_session() -> None:
    s = CallSession(early_audio_frames=50)
    s.handle_twilio({"event": "start", "streamSid": SID, "start": {
        "streamSid": SID, "callSid": "CA1", "accountSid": "AC1", "customParameters": {}}})
    s.twilio_media("E0AA", 20)
    s.handle_realtime({"type": "session.updated", "session": {}})
    assert s.twilio_media("L0AA", 40) is None
    s.realtime_lost()
    assert s.early_audio_sent() == []  # nothing sent into a closed connection
    assert s.twilio_media("L1AA", 60) is None
    again = s.handle_realtime({"type": "session.updated", "session": {}})
    assert [json.loads(a.text)["audio"] for a in again if isinstance(a, SendToRealtime)
            and "append" in a.text] == ["L0AA", "L1AA"]
