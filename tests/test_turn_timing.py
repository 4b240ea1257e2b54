"""Time to first audio per turn in the call core (no I/O): what is stamped, what is recorded.

The core reads no clock; these tests play the I/O layer's part, running each ``StampTime``
with a clock of their own, so the shares recorded are exactly the gaps between the stamps.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.test_call import Call, b64, turns
from tests.test_live_session import LiveCall, started
from voiceconv.session import RecordFirstAudio, SendToTwilio, StampTime
from voiceconv.timings import fine_ms, p50_p90, turn_rows


class Clock:
    """The I/O layer's monotonic clock, moved by hand; runs the core's stamps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.stamps: list[tuple[str, str, bool]] = []

    def run(self, session: Any, actions: list[Any], step: float = 0.0) -> list[Any]:
        for action in actions:
            if isinstance(action, StampTime):
                self.now += step
                self.stamps.append((action.point, action.item_id, action.answer))
                session.stamp(action, self.now)
        return actions


def test_an_answer_is_timed_from_speech_stopped_and_split_into_the_two_shares() -> None:
    c, clock = Call(), Clock()
    for _ in range(10):
        c.frame()
    c.rt({"type": "input_audio_buffer.speech_started", "audio_start_ms": 40, "item_id": "u1"})
    stopped = c.rt({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 300,
                    "item_id": "u1"})
    assert [a for a in stopped if isinstance(a, StampTime)] == [StampTime("caller_stopped")]
    clock.run(c.s, stopped)
    c.response("resp_1", "item_1")
    clock.now += 0.640  # the model takes 640 ms to its first delta
    first = c.s.receive_realtime(json.dumps({
        "type": "response.output_audio.delta", "item_id": "item_1", "response_id": "resp_1",
        "delta": b64(800)}))
    assert isinstance(first, list)
    # Stamped around the media message, in order: received, media sent, sent, then the mark.
    kinds = [type(a).__name__ for a in first]
    assert kinds[:4] == ["StampTime", "SendToTwilio", "StampTime", "SendToTwilio"]
    assert json.loads(first[1].text)["event"] == "media"
    clock.run(c.s, first, step=0.0015)  # 1.5 ms from receipt to the send
    assert clock.stamps[1:] == [("audio_received", "item_1", True), ("audio_sent", "item_1", False)]
    for msg in first:
        if isinstance(msg, SendToTwilio) and json.loads(msg.text)["event"] == "mark":
            c.marks.append(json.loads(msg.text)["mark"]["name"])
    # The item's further deltas keep the fast path: two texts, nothing stamped.
    more = c.s.receive_realtime(json.dumps({
        "type": "response.output_audio.delta", "item_id": "item_1", "response_id": "resp_1",
        "delta": b64(800)}))
    assert isinstance(more, tuple)
    c.marks.append(json.loads(more[1])["mark"]["name"])
    c.finish_item("resp_1", "item_1", "Hello.")
    (turn,) = turns(c.echo(2))
    assert turn.model_ms == pytest.approx(641.5)
    assert turn.bridge_ms == pytest.approx(1.5)
    assert turn.first_audio_ms == pytest.approx(643.0)
    assert turn.latency_ms is not None  # the call-clock latency is kept as before


def test_the_greeting_gets_the_bridge_share_only_and_marks_the_call_first_audio() -> None:
    c, clock = Call(greeting="Say hello."), Clock()
    c.frame()
    c.response("resp_g", "item_g")
    first = c.delta("item_g", "resp_g", 800)
    assert any(isinstance(a, RecordFirstAudio) for a in first)
    clock.run(c.s, first, step=0.002)
    assert clock.stamps == [("audio_received", "item_g", False), ("audio_sent", "item_g", False)]
    c.finish_item("resp_g", "item_g", "Hello!")
    (turn,) = turns(c.echo(1))
    assert turn.bridge_ms == pytest.approx(2.0)
    assert turn.model_ms is None and turn.first_audio_ms is None


def test_only_the_first_item_after_the_stop_answers_it_and_a_drop_forgets_the_stop() -> None:
    c, clock = Call(), Clock()
    c.frame()
    clock.run(c.s, c.rt({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 0,
                         "item_id": "u1"}))
    c.response("resp_1", "item_1")
    clock.run(c.s, c.delta("item_1", "resp_1", 160), step=0.1)
    c.response("resp_2", "item_2")  # a second item of the same answer: no caller stop before it
    second = c.delta("item_2", "resp_2", 160)
    assert [a.answer for a in second if isinstance(a, StampTime)] == [False, False]
    clock.run(c.s, second, step=0.1)
    item_1, item_2 = c.s.playback.items["item_1"], c.s.playback.items["item_2"]
    assert item_1.stopped_at is not None and item_2.stopped_at is None
    # A stop heard by a session that then dropped is not answered by the next one's audio.
    clock.run(c.s, c.rt({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 0,
                         "item_id": "u2"}))
    c.s.realtime_lost()
    c.ready()
    c.response("resp_3", "item_3")
    clock.run(c.s, c.delta("item_3", "resp_3", 160), step=0.1)
    assert c.s.playback.items["item_3"].stopped_at is None


def test_gpt_live_answers_are_timed_from_the_last_caller_fragment() -> None:
    call, clock = LiveCall(), Clock()
    clock.run(call.s, started(call))
    call.media()
    for text in ("what", " time is it"):
        clock.now += 0.2
        actions = call.event(type="session.input_transcript.delta", event_id="e", delta=text,
                             start_ms=0, end_ms=300)
        assert StampTime("caller_stopped") in actions
        clock.run(call.s, actions)
    stopped_at = clock.now
    clock.now += 0.5
    out = call.s.receive_realtime(json.dumps({"type": "session.output_audio.delta",
                                              "delta": b64(800)}))
    assert isinstance(out, list)
    clock.run(call.s, out, step=0.001)
    later = call.s.receive_realtime(json.dumps({"type": "session.output_audio.delta",
                                                "delta": b64(800)}))
    assert isinstance(later, tuple)  # the fast path again
    item = next(iter(call.s.playback.items.values()))
    assert item.stopped_at == stopped_at
    call.event(type="session.output_transcript.delta", event_id="e", delta="Ten past ten.",
               start_ms=400, end_ms=600)
    call.marks.append(int(json.loads(out[3].text)["mark"]["name"]))
    call.marks.append(int(json.loads(later[1])["mark"]["name"]))
    call.echo_all()
    (turn,) = turns(call.s.finish())[-1:]
    assert turn.role == "assistant"
    assert turn.model_ms == pytest.approx(501.0)
    assert turn.bridge_ms == pytest.approx(1.0)
    assert turn.first_audio_ms == pytest.approx(502.0)


def test_p50_p90_and_rows() -> None:
    assert p50_p90([5.0]) == (5.0, 5.0)
    assert p50_p90([float(n) for n in range(1, 11)]) == (5.0, 9.0)
    rows = turn_rows([
        {"first_audio_ms": 600.0, "model_ms": 598.0, "bridge_ms": 2.0},
        {"first_audio_ms": None, "model_ms": None, "bridge_ms": 0.5},
        {"first_audio_ms": 800.0, "model_ms": 799.0, "bridge_ms": 1.0},
    ])
    assert [(n, p50, p90, count) for n, p50, p90, count in rows] == [
        ("caller stopped → first audio sent", 600.0, 800.0, 2),
        ("model's share (→ first delta)", 598.0, 799.0, 2),
        ("bridge's share (delta → Twilio)", 1.0, 2.0, 3),
    ]
    assert turn_rows([{"first_audio_ms": None, "model_ms": None, "bridge_ms": None}]) == []
    assert (fine_ms(0.4211), fine_ms(12.34), fine_ms(640.2), fine_ms(None)) == (
        "0.42 ms", "12.3 ms", "640 ms", "")
