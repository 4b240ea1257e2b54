"""The 2026 Realtime session options: validated against the model, built in the SDK's shape."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
from django.forms import modelform_factory
from django.test import override_settings
from openai.types.realtime import RealtimeSessionCreateRequestParam
from openai.types.realtime.realtime_response_create_params_param import (
    RealtimeResponseCreateParamsParam,
)

from tests.test_call import Call, realtime_texts, run_until
from voiceconv.admin.agents import AgentAdminForm
from voiceconv.capabilities import capabilities, option_problems
from voiceconv.checks import check_settings
from voiceconv.models import Agent
from voiceconv.realtime import build_session_config, server_idle_timeout
from voiceconv.session import Limits
from voiceconv.testing.realtime_server import validate_client_event

AgentForm = modelform_factory(Agent, form=AgentAdminForm, exclude=("tools",))
SESSION = pydantic.TypeAdapter(RealtimeSessionCreateRequestParam)
RESPONSE = pydantic.TypeAdapter(RealtimeResponseCreateParamsParam)

pytestmark = pytest.mark.django_db


def form(**fields: Any) -> Any:
    data = {"name": "Sales", "slug": "sales", "enabled": "on", "session_extra": "{}"}
    data.update({k: ("" if v is None else str(v)) for k, v in fields.items()})
    return AgentForm(data=data)


def strict(session: dict[str, Any]) -> None:
    """``session`` has the SDK type's shape, and the stand-in finds nothing wrong with it."""
    SESSION.validate_python(session, strict=True)
    assert validate_client_event({"type": "session.update", "session": session}) == []


# ------------------------------------------------------------------ the capability table


def test_reasoning_family_and_snapshots_reason_older_models_do_not() -> None:
    for model in ("gpt-realtime-2", "gpt-realtime-2.1", "gpt-realtime-2.1-mini",
                  "gpt-realtime-2.1-2026-09-30"):
        assert capabilities(model).reasoning, model
    for model in ("gpt-realtime-1.5", "gpt-realtime", "gpt-realtime-mini", "someone-elses"):
        assert not capabilities(model).reasoning, model


@override_settings(VOICECONV={"MODEL_CAPABILITIES": {"acme-voice": {"reasoning": True}}})
def test_a_project_describes_a_model_the_table_does_not_know() -> None:
    assert capabilities("acme-voice").reasoning
    assert not capabilities("acme-voice").parallel_tool_calls
    assert option_problems("acme-voice", {"reasoning_effort": "low"}) == {}


# ------------------------------------------------------------------ the agent form, per option


@pytest.mark.parametrize("effort", ["minimal", "low", "medium", "high", "xhigh"])
def test_reasoning_effort_on_a_reasoning_model(effort: str) -> None:
    f = form(model="gpt-realtime-2.1", reasoning_effort=effort, greeting_reasoning_effort="minimal")
    assert f.is_valid(), f.errors


def test_reasoning_effort_on_a_non_reasoning_model_is_a_form_error() -> None:
    f = form(model="gpt-realtime-1.5", reasoning_effort="low", greeting_reasoning_effort="low")
    assert not f.is_valid()
    assert "not a reasoning model" in f.errors["reasoning_effort"][0]
    assert "not a reasoning model" in f.errors["greeting_reasoning_effort"][0]


def test_an_unknown_reasoning_effort_is_refused() -> None:
    f = form(model="gpt-realtime-2.1", reasoning_effort="maximal")
    assert not f.is_valid() and "reasoning_effort" in f.errors


def test_parallel_tool_calls() -> None:
    assert form(model="gpt-realtime-2", parallel_tool_calls="false").is_valid()
    f = form(model="gpt-realtime-1.5", parallel_tool_calls="true")
    assert not f.is_valid()
    assert "parallel_tool_calls" in f.errors["parallel_tool_calls"][0]


def test_truncation_auto_and_disabled_on_any_model() -> None:
    for kind in ("auto", "disabled"):
        assert form(model="gpt-realtime-1.5", truncation=kind).is_valid()


def test_truncation_retention_ratio() -> None:
    f = form(model="gpt-realtime-2.1", truncation="retention_ratio",
             truncation_retention_ratio=0.8, truncation_post_instructions_tokens=8000)
    assert f.is_valid(), f.errors
    agent = f.save()
    assert agent.session_overrides()["truncation"] == {
        "type": "retention_ratio", "retention_ratio": 0.8,
        "token_limits": {"post_instructions": 8000},
    }
    # Needs its ratio; the ratio is at most 1; only with a model that takes it.
    assert "truncation_retention_ratio" in form(truncation="retention_ratio").errors
    assert "truncation_retention_ratio" in form(
        truncation="retention_ratio", truncation_retention_ratio=1.5).errors
    f = form(model="gpt-realtime-1.5", truncation="retention_ratio",
             truncation_retention_ratio=0.8)
    assert "retention-ratio" in f.errors["truncation"][0]
    # A ratio without retention-ratio truncation says so.
    assert "truncation_retention_ratio" in form(truncation="auto",
                                                truncation_retention_ratio=0.5).errors


def test_idle_timeout_with_server_vad_only() -> None:
    assert form(turn_detection_type="server_vad", vad_idle_timeout_ms=8000).is_valid()
    f = form(turn_detection_type="semantic_vad", vad_idle_timeout_ms=8000)
    assert "server VAD only" in f.errors["vad_idle_timeout_ms"][0]


def test_eagerness_with_semantic_vad_only() -> None:
    for eagerness in ("low", "medium", "high", "auto"):
        assert form(turn_detection_type="semantic_vad", vad_eagerness=eagerness).is_valid()
    f = form(turn_detection_type="server_vad", vad_eagerness="high")
    assert "semantic VAD only" in f.errors["vad_eagerness"][0]


def test_custom_voices() -> None:
    assert form(model="gpt-realtime-2.1", voice="voice_1234abcd").is_valid()
    assert form(model="gpt-realtime-1.5", voice="cedar").is_valid()
    assert "custom voices" in form(model="gpt-realtime-1.5", voice="voice_1234").errors["voice"][0]
    assert "neither a built-in" in form(voice="Marvin").errors["voice"][0]
    assert "voice" in form(voice="voice_").errors


def test_transcription_delay_for_gpt_realtime_whisper_only() -> None:
    assert form(transcription_model="gpt-realtime-whisper", transcription_delay="low").is_valid()
    f = form(transcription_model="gpt-transcribe", transcription_delay="low")
    assert "gpt-realtime-whisper" in f.errors["transcription_delay"][0]
    f = form(transcription_model="off", transcription_delay="low")
    assert "transcription_delay" in f.errors


def test_max_output_tokens() -> None:
    assert form(max_output_tokens=4096).is_valid()
    assert "max_output_tokens" in form(max_output_tokens=4097).errors
    assert "max_output_tokens" in form(max_output_tokens=0).errors


# ------------------------------------------------------------------ the session built


def full_agent() -> Agent:
    f = form(
        model="gpt-realtime-2.1", voice="voice_1234abcd", reasoning_effort="low",
        greeting_reasoning_effort="minimal", parallel_tool_calls="true",
        truncation="retention_ratio", truncation_retention_ratio=0.8,
        truncation_post_instructions_tokens=8000, turn_detection_type="server_vad",
        vad_idle_timeout_ms=8000, transcription_model="gpt-realtime-whisper",
        transcription_delay="medium", max_output_tokens=800,
    )
    assert f.is_valid(), f.errors
    agent: Agent = f.save()
    return agent


def test_the_session_carries_every_option_in_the_sdk_shape() -> None:
    session = build_session_config(full_agent().session_overrides())
    strict(session)
    assert session["reasoning"] == {"effort": "low"}
    assert session["parallel_tool_calls"] is True
    assert session["truncation"]["retention_ratio"] == 0.8
    assert session["audio"]["output"]["voice"] == {"id": "voice_1234abcd"}
    assert session["audio"]["input"]["transcription"]["delay"] == "medium"
    assert session["audio"]["input"]["turn_detection"]["idle_timeout_ms"] == 8000
    assert session["max_output_tokens"] == 800
    assert server_idle_timeout(session)


def test_semantic_vad_eagerness_in_the_sdk_shape() -> None:
    f = form(turn_detection_type="semantic_vad", vad_eagerness="high")
    session = build_session_config(f.save().session_overrides())
    strict(session)
    td = session["audio"]["input"]["turn_detection"]
    assert (td["type"], td["eagerness"]) == ("semantic_vad", "high")
    assert not server_idle_timeout(session)


@override_settings(VOICECONV={"REASONING_EFFORT": "low", "PARALLEL_TOOL_CALLS": True,
                              "TRUNCATION": {"type": "retention_ratio", "retention_ratio": 0.5},
                              "VOICE": "voice_9"})
def test_defaults_a_model_refuses_are_left_out_of_its_sessions() -> None:
    session = build_session_config({"model": "gpt-realtime-1.5"})
    strict(session)
    for key in ("reasoning", "parallel_tool_calls", "truncation"):
        assert key not in session
    assert session["audio"]["output"]["voice"] == "marin"
    # The same settings reach a reasoning model's session.
    session = build_session_config({"model": "gpt-realtime-2.1"})
    assert session["reasoning"] == {"effort": "low"} and session["parallel_tool_calls"] is True


@pytest.mark.parametrize(
    ("voiceconv", "ids"),
    [
        ({"REASONING_EFFORT": "huge"}, ["voiceconv.E004"]),
        ({"TRUNCATION": "sometimes"}, ["voiceconv.E004"]),
        ({"MODEL": "gpt-realtime-1.5", "REASONING_EFFORT": "low"}, ["voiceconv.W006"]),
        ({"TRANSCRIPTION_MODEL": "gpt-transcribe", "TRANSCRIPTION_DELAY": "low"},
         ["voiceconv.E004"]),
        ({"REASONING_EFFORT": "low", "TRUNCATION": "auto", "TRANSCRIPTION_DELAY": "low"}, []),
    ],
)
def test_settings_are_checked_against_the_model(voiceconv: dict[str, Any],
                                                ids: list[str]) -> None:
    with override_settings(VOICECONV=voiceconv):
        assert [m.id for m in check_settings()] == ids


# ------------------------------------------------------------------ the call core


def test_the_greeting_gets_its_own_reasoning_effort_in_the_sdk_shape() -> None:
    c = Call(greeting="")
    c.s.greeting, c.s.greeting_reasoning_effort = "Say hi.", "minimal"
    (event,) = realtime_texts(c.s.greet())
    assert event["response"]["reasoning"] == {"effort": "minimal"}
    RESPONSE.validate_python(event["response"], strict=True)
    plain = Call(greeting="")
    plain.s.greeting = "Say hi."
    (event,) = realtime_texts(plain.s.greet())
    assert "reasoning" not in event["response"]


def idle_call() -> Call:
    return Call(greeting="", server_idle_timeout=True,
                limits=Limits(idle_reprompt_ms=3000, idle_hangup_ms=20_000))


def test_with_the_server_idle_timeout_the_core_does_not_reprompt_itself() -> None:
    c = idle_call()
    assert realtime_texts(run_until(c, 15_000)) == []


def test_timeout_triggered_is_the_reprompt_and_a_second_one_ends_the_call() -> None:
    c = idle_call()
    run_until(c, 8000)
    actions = c.rt({"type": "input_audio_buffer.timeout_triggered", "audio_start_ms": 0,
                    "audio_end_ms": 8000, "item_id": "item_idle1"})
    assert any("idle timeout reprompts" in getattr(a, "message", "") for a in actions)
    # Its empty user item is not the caller speaking: no activity, no answer asked for.
    assert realtime_texts(c.rt({"type": "input_audio_buffer.committed",
                                "item_id": "item_idle1"})) == []
    assert c.s.clock.idle_stage == 1
    run_until(c, 16_000)
    actions = c.rt({"type": "input_audio_buffer.timeout_triggered", "audio_start_ms": 8000,
                    "audio_end_ms": 16_000, "item_id": "item_idle2"})
    assert c.s.state.hangup_reason == "idle"
    # The server answers the timeout with a response of its own: the goodbye waits for it.
    assert realtime_texts(actions) == []
    c.response("resp_idle2", "item_reprompt2")
    (goodbye,) = realtime_texts(c.rt({"type": "response.done", "response": {
        "id": "resp_idle2", "status": "completed", "output": []}}))
    assert "say goodbye" in goodbye["response"]["instructions"]


def test_a_caller_who_speaks_after_the_server_reprompt_is_active_again() -> None:
    c = idle_call()
    run_until(c, 8000)
    c.rt({"type": "input_audio_buffer.timeout_triggered", "audio_start_ms": 0,
          "audio_end_ms": 8000, "item_id": "item_idle1"})
    c.rt({"type": "input_audio_buffer.committed", "item_id": "item_idle1"})
    c.speech_started()
    c.rt({"type": "input_audio_buffer.committed", "item_id": "item_user"})
    assert c.s.clock.idle_stage == 0
    c.rt({"type": "input_audio_buffer.timeout_triggered", "audio_start_ms": 9000,
          "audio_end_ms": 17_000, "item_id": "item_idle2"})
    assert c.s.state.hangup_reason is None  # a reprompt again, not the end


def test_a_response_asked_for_with_its_own_reasoning_effort() -> None:
    from voiceconv import control

    assert control.validate("say", {"text": "Hi", "reasoning_effort": "high"}) == {
        "text": "Hi", "reasoning_effort": "high"}
    c = Call(greeting="")
    (event,) = realtime_texts(c.s.say("Offer a callback.", reasoning_effort="high"))
    assert event["response"]["reasoning"] == {"effort": "high"}
    RESPONSE.validate_python(event["response"], strict=True)
