"""The 2026 session options end to end: an agent's options reach the stand-in's session (checked
there against the SDK's types), and the server's idle timeout drives the idle reprompt."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from tests.e2e import enter_call, play_until_closed, wait_for_call
from voiceconv.testing import RealtimeStandIn, ScriptedResponse
from voiceconv.testing.server import ServerProcess

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("hang_up_leftovers"),
]

OPTIONS = {
    "model": "gpt-realtime-2.1",
    "voice": "voice_1234abcd",
    "reasoning_effort": "low",
    "greeting_reasoning_effort": "minimal",
    "parallel_tool_calls": False,
    "truncation": "retention_ratio",
    "truncation_retention_ratio": 0.75,
    "truncation_post_instructions_tokens": 6000,
    "turn_detection_type": "server_vad",
    "vad_idle_timeout_ms": 2000,
    "transcription_model": "gpt-realtime-whisper",
    "transcription_delay": "low",
    "max_output_tokens": 700,
}


@sync_to_async
def configure_default_agent(**fields: object) -> None:
    from voiceconv.models import Agent

    agent = Agent.objects.filter(is_default=True).first() or Agent(
        name="Default", slug="default", is_default=True
    )
    for key, value in fields.items():
        setattr(agent, key, value)
    agent.full_clean()  # what the admin form checks
    agent.save()


async def test_the_agent_s_options_reach_the_session_in_the_sdk_shape(
    e2e_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    await configure_default_agent(**OPTIONS)
    standin.responses.append(ScriptedResponse(text="Hello, how can I help?"))
    client = await enter_call(e2e_server)
    session = await standin.wait_for_session(0, timeout=10)
    assert session.model == "gpt-realtime-2.1"
    update = (await session.expect_event("session.update", timeout=10))["session"]
    assert update["reasoning"] == {"effort": "low"}
    assert update["parallel_tool_calls"] is False
    assert update["truncation"] == {"type": "retention_ratio", "retention_ratio": 0.75,
                                    "token_limits": {"post_instructions": 6000}}
    assert update["audio"]["output"]["voice"] == {"id": "voice_1234abcd"}
    assert update["audio"]["input"]["transcription"] == {"model": "gpt-realtime-whisper",
                                                         "delay": "low"}
    assert update["audio"]["input"]["turn_detection"]["idle_timeout_ms"] == 2000
    assert update["max_output_tokens"] == 700
    greeting = await session.expect_event("response.create", timeout=10)
    assert greeting["response"]["reasoning"] == {"effort": "minimal"}
    # The stand-in validated both against openai.types.realtime and accepted them.
    assert session.config["truncation"]["retention_ratio"] == 0.75
    assert session.protocol_violations == []
    await client.hang_up()


async def test_the_server_idle_timeout_reprompts_and_a_second_silence_ends_the_call(
    e2e_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    await configure_default_agent(turn_detection_type="server_vad", vad_idle_timeout_ms=2000,
                                  model="gpt-realtime-2.1")
    standin.responses.append(ScriptedResponse(text="Hello, how can I help?"))
    standin.responses.append(ScriptedResponse(text="Are you still there?"))
    standin.responses.append(ScriptedResponse(text="Are you still there?"))
    standin.responses.append(ScriptedResponse(text="Goodbye."))
    client = await enter_call(e2e_server)
    session = await standin.wait_for_session(0, timeout=10)
    await session.expect_event("response.create", timeout=10)
    await play_until_closed(client, timeout=60)
    triggered = session.sent_types().count("input_audio_buffer.timeout_triggered")
    assert triggered >= 2, session.sent_types()
    # The app asked for no reprompt of its own: only the greeting and the goodbye.
    instructions = [r.get("instructions", "") for r in session.response_requests]
    assert len(instructions) == 2, instructions
    assert "say goodbye" in instructions[1]
    call = await wait_for_call(client.call_sid, ended=True, timeout=10)
    assert call.end_reason == "idle"


async def test_every_start_step_is_timed_and_shown_and_exported(
    e2e_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    from voiceconv.transcripts import entry_as_dict

    standin.responses.append(ScriptedResponse(text="Hello, how can I help?"))
    client = await enter_call(e2e_server)
    session = await standin.wait_for_session(0, timeout=10)
    await session.expect_event("response.create", timeout=10)
    await client.wait_for_media(timeout=30)  # the greeting's first audio has arrived
    await client.wait_for_playback(timeout=30)  # it plays, Twilio echoes its marks
    await client.hang_up()
    call = await wait_for_call(client.call_sid, ended=True, timeout=30)
    timings = await sync_to_async(call.start_timings)()
    assert set(timings) == {"webhook_received", "stream_started", "session_ready",
                            "first_audio_sent", "first_audio_heard"}
    assert all(value is not None for value in timings.values()), timings

    @sync_to_async
    def shown() -> tuple[str, str, dict[str, object]]:
        from django.contrib.auth.models import User
        from django.test import Client
        from django.urls import reverse

        from voiceconv.models import TranscriptEntry

        user = User.objects.create_superuser("timing", "t@example.com", "pw")
        web = Client()
        web.force_login(user)
        page = web.get(reverse("admin:voiceconv_call_change", args=[call.pk])).content.decode()
        agent = web.get(reverse("admin:voiceconv_agent_change", args=[call.agent_id]))
        entry = TranscriptEntry.objects.filter(call=call).select_related("call").first()
        return page, agent.content.decode(), entry_as_dict(entry) if entry else {}

    page, agent_page, exported = await shown()
    import re

    labels = set(re.findall(r"<label[^>]*>([^<]*)</label>", page))
    assert {"OpenAI session ready:", "First audio heard:"} <= labels, labels
    assert "first audio heard" in agent_page and "p90" in agent_page
    assert exported.get("call_start_ms") == timings
