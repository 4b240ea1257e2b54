"""The core's Twilio message validation and its separate handler tables (no sockets)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from voiceconv.exceptions import LocalProtocolError, OpenAIProtocolError, TwilioProtocolError
from voiceconv.session import (
    REALTIME_HANDLERS,
    TWILIO_HANDLERS,
    CallSession,
    CloseStream,
    EndCall,
    FlushEarlyAudio,
    Log,
    SendToRealtime,
    StartStream,
)
from voiceconv.session import messages as m

SID = "MZ" + "a" * 32
START = json.dumps({"event": "start", "streamSid": SID,
                    "start": {"callSid": "CA1", "accountSid": "AC1", "streamSid": SID,
                              "customParameters": {"to": "+15550001111"}}})


def media(payload: str = "//8=", timestamp: Any = "20", sid: Any = SID) -> str:
    return json.dumps({"event": "media", "streamSid": sid,
                       "media": {"timestamp": timestamp, "payload": payload}})


def started(**kwargs: Any) -> CallSession:
    s = CallSession(**kwargs)
    (action,) = s.receive_twilio(START)
    assert isinstance(action, StartStream)
    assert action.start.custom_parameters == {"to": "+15550001111"}
    return s


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("x" * (m.MAX_MESSAGE_BYTES + 1), "oversized"),
        ("{not json", "not json"),
        ("[1, 2]", "not json"),
        ('{"event": "clear"}', "unknown event"),
        ('{"event": 5}', "unknown event"),
        (media(timestamp="soon"), "malformed media"),
        (media(timestamp=-1), "malformed media"),
        (media(timestamp=2**31), "malformed media"),
        (media(payload='AA","type":"response.create'), "bad payload"),
        (media(sid="MZ" + "b" * 32), "wrong streamSid"),
        (media(sid=None), "wrong streamSid"),
    ],
)
def test_bad_frames_are_counted_by_kind_logged_once_and_never_reach_openai(
    text: str, kind: str
) -> None:
    s = started()
    s.handle_realtime({"type": "session.updated", "session": {}})
    first = s.receive_twilio(text)
    assert first == [Log("warning", first[0].message)]  # type: ignore[index, union-attr]
    assert f"({kind})" in first[0].message  # type: ignore[index, union-attr]
    assert s.receive_twilio(text) == []
    assert s.bad_input == {kind: 2}
    # a good frame still passes straight through
    assert s.receive_twilio(media()) == '{"type":"input_audio_buffer.append","audio":"//8="}'


def test_media_before_start_and_messages_before_start_are_refused() -> None:
    s = CallSession()
    assert s.receive_twilio(media()) != ""
    assert s.receive_twilio(json.dumps({"event": "mark", "mark": {"name": "1"}})) != []
    assert s.bad_input == {"media before start": 1, "before start": 1}
    assert s.receive_twilio('{"event":"connected","protocol":"Call"}') == []


@pytest.mark.parametrize(
    "start",
    [
        {"event": "start", "start": {"customParameters": {}}},
        {"event": "start", "streamSid": "MZ1", "start": []},
        {"event": "start", "streamSid": 5, "start": {"callSid": ["CA1"]}},
    ],
)
def test_a_start_without_its_sids_closes_the_stream(start: dict[str, Any]) -> None:
    s = CallSession()
    actions = s.receive_twilio(json.dumps(start))
    assert isinstance(actions, list) and actions[-1] == CloseStream()
    assert not s.state.started


def test_media_is_buffered_before_the_realtime_session_is_ready() -> None:
    s = started()
    assert s.receive_twilio(media()) == ""
    actions = s.handle_realtime({"type": "session.updated", "session": {}})
    appends = [a for a in actions if isinstance(a, SendToRealtime | FlushEarlyAudio)]
    assert appends == [SendToRealtime('{"type":"input_audio_buffer.append","audio":"//8="}'),
                       FlushEarlyAudio()]
    assert s.early_audio_sent() == []


@pytest.mark.parametrize(
    "etype",
    ["twilio.stop", "twilio_stop", "realtime", "twilio", "twilio.start", "refuse", "finish",
     "request.hangup", "request_hangup", "on_clock", "mark_echo", "barge_in", "say"],
)
def test_realtime_events_named_like_twilio_messages_or_core_methods_are_unknown(
    etype: str,
) -> None:
    s = started()
    s.handle_realtime({"type": "session.updated", "session": {}})
    assert s.handle_realtime({"type": etype, "reason": "x", "instructions": "x"}) == []
    assert s.receive_realtime(json.dumps({"type": etype})) == []
    assert not s.state.ended and s.state.hangup_reason is None


def test_the_two_handler_tables_are_separate() -> None:
    assert set(TWILIO_HANDLERS) == m.TWILIO_EVENTS
    assert not set(TWILIO_HANDLERS) & set(REALTIME_HANDLERS)
    s = started()
    assert s.handle_twilio({"event": "stop", "streamSid": SID}) == [EndCall("caller_hung_up")]


def test_apology_frames_clear_play_then_mark() -> None:
    frames = [json.loads(f) for f in m.apology_frames(SID, bytes(12000))]
    assert frames[0] == {"event": "clear", "streamSid": SID}
    assert [len(f["media"]["payload"]) for f in frames[1:-1]] == [10668, 5336]
    assert frames[-1] == {"event": "mark", "streamSid": SID, "mark": {"name": "apology"}}


# ------------------------------------------------------------------ whose fault it is


@pytest.mark.parametrize(
    "text", ["not json", '{"event": "clear"}', "x" * (m.MAX_MESSAGE_BYTES + 1), "[1]"]
)
def test_a_frame_twilio_should_not_send_is_twilios_fault(text: str) -> None:
    with pytest.raises(TwilioProtocolError) as caught:
        m.parse_twilio(text)
    assert caught.value.fault == "twilio"
    assert isinstance(caught.value, m.BadInput) and caught.value.kind


def test_a_start_without_sids_and_bad_media_are_twilios_fault() -> None:
    with pytest.raises(TwilioProtocolError):
        m.parse_start({"event": "start", "start": {}})
    with pytest.raises(TwilioProtocolError):
        m.media_fields({"event": "media", "media": {"payload": "!!", "timestamp": "5"}})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff not json", "malformed Realtime event ignored"),
        ('{"no": "type"}', "malformed Realtime event ignored"),
    ],
)
def test_a_realtime_event_we_cannot_read_is_openais_fault(data: str | bytes, message: str) -> None:
    with pytest.raises(OpenAIProtocolError, match=message) as caught:
        m.parse_realtime(data)
    assert caught.value.fault == "openai"


def test_an_audio_delta_we_cannot_play_is_openais_fault() -> None:
    with pytest.raises(OpenAIProtocolError, match="malformed Realtime audio delta"):
        m.audio_delta_fields({"type": "response.output_audio.delta", "delta": "AAAA"})
    with pytest.raises(OpenAIProtocolError, match="not base64"):
        m.audio_delta_fields({"delta": "<oops>", "item_id": "i", "response_id": "r"})
    assert m.audio_delta_fields({"delta": "AAAA", "item_id": "i", "response_id": "r"}) == (
        "AAAA", "i", "r",
    )


def test_the_core_logs_openais_fault_and_keeps_the_call() -> None:
    session = CallSession()
    for data in (b"\xff", '{"type": "response.output_audio.delta", "delta": 5}'):
        out = session.receive_realtime(data)
        assert isinstance(out, list) and len(out) == 1
        assert isinstance(out[0], Log) and out[0].level == "warning"
    assert not session.state.ended


def test_a_message_the_protocol_forbids_is_our_fault() -> None:
    for build in (m.clear_message, m.media_prefix, m.mark_prefix):
        with pytest.raises(LocalProtocolError) as caught:
            build("")
        assert caught.value.fault == "voiceconv"
    with pytest.raises(LocalProtocolError):
        m.truncate_event("item_1", -1)
    assert json.loads(m.truncate_event("item_1", 0))["audio_end_ms"] == 0
