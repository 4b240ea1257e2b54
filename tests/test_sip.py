"""The SIP path's pure parts and the call core's no-media mode."""

from __future__ import annotations

import json

from voiceconv.session import HangUp, SendToRealtime, SendToTwilio
from voiceconv.session.core import CallSession
from voiceconv.sip import accept_arguments, number, refer_uri, sip_session, uri_user


def test_the_number_comes_from_the_sip_uri() -> None:
    assert uri_user('"Ann" <sip:+14155550123@trunk.pstn.twilio.com>;tag=a1') == "+14155550123"
    assert number("<sip:+14155550100@sip.api.openai.com;transport=tls>") == "+14155550100"
    assert number("<tel:+14155550100>") == "+14155550100"
    assert number("sip:reception@example.com") == "reception"
    assert number("") == ""


def test_the_accept_is_the_media_session_without_formats() -> None:
    session = {
        "type": "realtime", "instructions": "Be brief.", "tool_choice": "auto", "tools": [],
        "audio": {"input": {"format": {"type": "audio/pcmu"}, "transcription": None},
                  "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"}},
        "custom_key": 1,
    }
    assert sip_session(session)["audio"] == {"input": {"transcription": None},
                                             "output": {"voice": "marin"}}
    kwargs = accept_arguments(session, "gpt-realtime-2.1")
    assert kwargs["model"] == "gpt-realtime-2.1" and kwargs["type"] == "realtime"
    assert kwargs["extra_body"] == {"custom_key": 1}
    assert "format" not in kwargs["audio"]["output"]


def test_refer_targets_are_uris() -> None:
    assert refer_uri("+14155550100") == "tel:+14155550100"
    assert refer_uri("sip:desk@example.com") == "sip:desk@example.com"


def _ready_session() -> CallSession:
    session = CallSession(greeting="Say hello.")
    session.begin_without_media("rtc_1", {"from": "+1"})
    actions = session.handle_realtime({"type": "session.updated", "session": {}})
    assert any(isinstance(a, SendToRealtime) and "response.create" in a.text for a in actions)
    return session


def test_no_media_mode_never_sends_to_twilio_and_ignores_audio() -> None:
    session = _ready_session()
    assert session.state.started and session.state.call_sid == "rtc_1"
    out = session.receive_realtime(json.dumps({
        "type": "response.output_audio.delta", "delta": "AAAA", "item_id": "i", "response_id": "r",
    }))
    assert not any(isinstance(a, SendToTwilio) for a in out if not isinstance(a, str))


def test_the_hang_up_waits_for_the_service_to_finish_playing() -> None:
    session = _ready_session()
    session.handle_realtime({"type": "response.created", "response": {"id": "r1"}})
    session.handle_realtime({"type": "output_audio_buffer.started", "response_id": "r1"})
    session.request_hangup("agent_ended")
    done = session.handle_realtime({"type": "response.done",
                                    "response": {"id": "r1", "status": "completed"}})
    assert not any(isinstance(a, HangUp) for a in done)  # the goodbye is still playing
    stopped = session.handle_realtime({"type": "output_audio_buffer.stopped",
                                       "response_id": "r1"})
    assert [a for a in stopped if isinstance(a, HangUp)] == [HangUp("agent_ended")]


def test_call_time_arrives_by_tick() -> None:
    session = CallSession()
    session.begin_without_media("rtc_2")
    session.tick(5000)
    assert session.state.now_ms == 5000
    session.tick(1000)
    assert session.state.now_ms == 5000


def test_a_key_pressed_on_a_sip_call_follows_the_dtmf_rule() -> None:
    from voiceconv.session import RecordTurn

    session = _ready_session()
    actions = session.handle_realtime({"type": "input_audio_buffer.dtmf_event_received",
                                       "event": "5", "received_at": 1_750_000_000})
    turns = [a.turn for a in actions if isinstance(a, RecordTurn)]
    assert [(t.role, t.text) for t in turns] == [("dtmf", "5")]
    assert any(isinstance(a, SendToRealtime) and "pressed the key 5" in a.text for a in actions)
