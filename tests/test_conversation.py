"""Conversation tests (voiceconv.testing.conversation) of the example project's get_time agent.

Against the stand-in through the e2e server; against the real model only when a test is
marked ``real_model`` and ``OPENAI_API_KEY`` is set.
"""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command

from tests.conftest import AUTH_TOKEN, PUBLIC_URL, ROOT
from voiceconv.models import Agent, ToolDefinition
from voiceconv.testing import (
    RealtimeStandIn,
    ScriptedFunctionCall,
    ScriptedResponse,
    ServerProcess,
    rms,
)
from voiceconv.testing.conversation import (
    Conversation,
    ConversationResult,
    ModelTarget,
    WavError,
    read_wav,
)


def time_agent() -> Agent:
    """The example project's default agent, offering get_time (as after ``migrate``)."""
    call_command("voiceconv_sync_tools", verbosity=0)
    agent, _ = Agent.objects.get_or_create(
        slug="default", defaults={"name": "Default agent", "is_default": True}
    )
    agent.tools.add(ToolDefinition.objects.get(name="get_time"))
    return agent


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
async def test_the_get_time_agent_tells_the_time(
    e2e_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    await sync_to_async(time_agent)()
    standin.caller_transcripts.append("What time is it?")
    result = await (
        Conversation(e2e_server.http_url, auth_token=AUTH_TOKEN, public_url=PUBLIC_URL,
                     standin=standin, greeting="Hello, how can I help?")
        .say("What time is it?", reply=[
            ScriptedResponse(text="", function_calls=[ScriptedFunctionCall("get_time")]),
            "It is a quarter past ten.",
        ])
        .run()
    )
    result.expect_tool("get_time")
    result.expect_tool("get_time", **{})  # arguments: none
    result.expect_transcript_contains("what time", role="caller")
    result.expect_transcript_contains("quarter past ten", role="assistant")
    assert '"time"' in result.tool_calls[0]["output"]
    assert result.end_reason == "caller_hung_up"
    assert result.time_to_first_audio_ms is not None and result.turns[0].latency_ms is not None
    assert rms(result.reply_audio) > 0.01
    with pytest.raises(AssertionError, match="tool end_call not called"):
        result.expect_tool("end_call")
    with pytest.raises(AssertionError, match="no assistant turn contains"):
        result.expect_transcript_contains("midnight", role="assistant")
    with pytest.raises(AssertionError, match="wanted 'agent_ended'"):
        result.expect_ended()
    assert standin.sessions[0].protocol_violations == []


@pytest.mark.e2e
@pytest.mark.real_model
@pytest.mark.django_db(transaction=True)
async def test_the_get_time_agent_against_the_real_model(voiceconv_model: ModelTarget) -> None:
    """Runs only with OPENAI_API_KEY set: the real model must use the tool to tell the time."""
    from tests.conftest import database_url

    await sync_to_async(time_agent)()
    env = {"DATABASE_URL": await sync_to_async(database_url)(), "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
           "PUBLIC_URL": PUBLIC_URL, **voiceconv_model.env}
    with ServerProcess(env=env, cwd=ROOT) as server:
        result = await (
            Conversation(server.http_url, auth_token=AUTH_TOKEN, public_url=PUBLIC_URL,
                         greeting="")
            .say("What time is it right now?")
            .run()
        )
    result.expect_tool("get_time")


def test_expectations_on_a_result() -> None:
    result = ConversationResult(
        call_sid="CA1", end_reason="transferred", time_to_first_audio_ms=900.0,
        transcript=[{"role": "caller", "text": "Put me through to sales"}],
        tool_calls=[{"tool_name": "transfer_call", "arguments": '{"target": "+14155550100"}',
                     "output": "", "error": ""}],
    )
    result.expect_transferred("+14155550100")
    result.expect_tool("transfer_call", target=lambda t: t.startswith("+1"))
    result.expect_first_audio_within(1000)
    with pytest.raises(AssertionError):
        result.expect_transferred("+14155550199")
    with pytest.raises(AssertionError):
        result.expect_first_audio_within(500)
    with pytest.raises(AssertionError):
        result.expect_transcript_contains("sales", role="assistant")
    result.expect_transcript_contains("SALES")


def _wav(path: Path, rate: int, channels: int, seconds: float = 0.5, width: int = 2) -> Path:
    n = int(rate * seconds)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        frames = bytearray()
        for i in range(n):
            value = int(12000 * math.sin(2 * math.pi * 440 * i / rate))
            frames += struct.pack("<h", value) * channels
        wav.writeframes(bytes(frames))
    return path


def test_wav_files_are_mixed_down_and_resampled(tmp_path: Path) -> None:
    telephone = read_wav(_wav(tmp_path / "a.wav", 8000, 1))
    assert len(telephone) == 4000
    stereo_cd = read_wav(_wav(tmp_path / "b.wav", 44100, 2))
    assert abs(len(stereo_cd) - 4000) <= 2
    # The same tone, whatever the file's format.
    assert abs(rms(stereo_cd[400:-400]) - rms(telephone[400:-400])) < 0.02


def test_unusable_wav_files_are_refused_with_a_reason(tmp_path: Path) -> None:
    not_wav = tmp_path / "notes.wav"
    not_wav.write_text("hello")
    with pytest.raises(WavError, match="not a PCM WAV file"):
        read_wav(not_wav)
    with pytest.raises(WavError, match="no such file"):
        read_wav(tmp_path / "missing.wav")
    empty = _wav(tmp_path / "empty.wav", 8000, 1, seconds=0)
    with pytest.raises(WavError, match="no audio"):
        read_wav(empty)
