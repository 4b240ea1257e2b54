"""Outbound calls end to end: placed through the REST stand-in, answered by a "person" or a
"machine" (the AMD verdict posted by the stand-in, signed), each answering-machine policy."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async

from tests.conftest import AUTH_TOKEN, PUBLIC_URL
from tests.e2e import eventually, play_until_closed, track, wait_for_call
from voiceconv.calls import aplace_call
from voiceconv.testing import RealtimeStandIn, ScriptedResponse, TwilioStreamClient, speech_like
from voiceconv.testing.server import ServerProcess
from voiceconv.testing.twilio_api import FakeTwilioAPI

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CALLEE = "+14155550123"
AGENT_NUMBER = "+14155550100"
GREETING = "Introduce yourself as Ada from Acme, calling about the order."
VOICEMAIL = "This is Ada from Acme: your order is ready. Please call us back."


@pytest.fixture(autouse=True)
def _dialling_settings(settings: Any, twilio_api: FakeTwilioAPI) -> None:
    """This process places the calls: the same credentials and origins as the server."""
    settings.TWILIO_ACCOUNT_SID = "AC" + "0" * 32
    settings.TWILIO_AUTH_TOKEN = AUTH_TOKEN
    settings.VOICECONV = {"TWILIO_API_BASE": twilio_api.url, "PUBLIC_URL": PUBLIC_URL}


def make_agent(**telephony: Any) -> Any:
    from voiceconv.models import Agent, AgentTelephony

    agent = Agent.objects.create(name="Ada", slug="ada", phone_numbers=AGENT_NUMBER,
                                 greeting=GREETING)
    AgentTelephony.objects.create(agent=agent, **telephony)
    return agent


async def dial_and_answer(
    twilio_api: FakeTwilioAPI, standin: RealtimeStandIn, **telephony: Any
) -> tuple[Any, TwilioStreamClient, Any]:
    agent = await sync_to_async(make_agent)(**telephony)
    call = await aplace_call(CALLEE, agent=agent)
    placed = twilio_api.calls[call.twilio_call_sid]
    client = track(await twilio_api.answer(placed.sid))
    await client.start_call()
    session = await standin.wait_for_session(0, timeout=10)
    await session.expect_event("session.update", timeout=5)
    await eventually(lambda: "session.updated" in session.sent_types(), timeout=5)
    return call, client, session


async def test_a_person_answers_and_hears_the_greeting_held_for_the_verdict(
    twilio_server: ServerProcess, standin: RealtimeStandIn, twilio_api: FakeTwilioAPI,
    hang_up_leftovers: None,
) -> None:
    call, client, session = await dial_and_answer(twilio_api, standin, greeting_wait="amd")
    first = session.received[[e["type"] for e in session.received].index("session.update")]
    assert first["session"]["audio"]["input"]["turn_detection"]["create_response"] is False
    assert client.custom_parameters["direction"] == "outbound-api"
    await client.send_audio(speech_like(600))  # "Hello?"
    await client.send_silence(800)
    assert "response.create" not in [e["type"] for e in session.received]
    assert await twilio_api.send_amd(call.twilio_call_sid, "human") == 204
    update = await session.expect_event("session.update", timeout=5)
    assert update["session"]["audio"]["input"]["turn_detection"]["create_response"] is True
    greeting = await session.expect_event("response.create", timeout=5)
    assert GREETING in greeting["response"]["instructions"]
    await client.wait_for_media(1, timeout=5)
    await client.hang_up()
    record = await wait_for_call(call.twilio_call_sid, ended=True)
    assert record.answered_by == "human"
    assert record.direction == "outbound-api"
    assert record.twilio_stream_sid == client.stream_sid
    assert session.protocol_violations == []


async def test_a_person_speaks_first_and_the_agent_answers(
    twilio_server: ServerProcess, standin: RealtimeStandIn, twilio_api: FakeTwilioAPI,
    hang_up_leftovers: None,
) -> None:
    call, client, session = await dial_and_answer(
        twilio_api, standin, greeting_wait="first_words", on_machine="talk"
    )
    assert twilio_api.calls[call.twilio_call_sid].param("MachineDetection") == ""
    await client.send_silence(500)
    assert "response.create" not in [e["type"] for e in session.received]
    assert not [e for e in session.sent if e["type"] == "response.created"]
    await client.send_audio(speech_like(700))  # the callee: "Hello, who is this?"
    await client.send_silence(900)
    await eventually(lambda: any(e["type"] == "response.created" for e in session.sent), 5)
    await client.wait_for_media(1, timeout=5)
    assert "response.create" not in [e["type"] for e in session.received]  # VAD answered
    await client.hang_up()
    await wait_for_call(call.twilio_call_sid, ended=True)


async def test_a_machine_is_hung_up_on(
    twilio_server: ServerProcess, standin: RealtimeStandIn, twilio_api: FakeTwilioAPI,
    hang_up_leftovers: None,
) -> None:
    call, client, session = await dial_and_answer(
        twilio_api, standin, greeting_wait="amd", on_machine="hang_up"
    )
    assert twilio_api.calls[call.twilio_call_sid].param("MachineDetection") == "Enable"
    assert await twilio_api.send_amd(call.twilio_call_sid, "machine_start") == 204
    await play_until_closed(client, timeout=30)
    record = await wait_for_call(call.twilio_call_sid, ended=True)
    assert record.answered_by == "machine_start"
    assert record.end_reason == "answering_machine"
    assert "response.create" not in [e["type"] for e in session.received]
    assert client.received_media == []  # nothing said to the machine


@pytest.mark.parametrize("mode", ["text", "prompt"])
async def test_a_machine_gets_the_voicemail_after_the_beep(
    twilio_server: ServerProcess, standin: RealtimeStandIn, twilio_api: FakeTwilioAPI,
    hang_up_leftovers: None, mode: str,
) -> None:
    standin.responses.append(ScriptedResponse(text=VOICEMAIL))
    call, client, session = await dial_and_answer(
        twilio_api, standin, greeting_wait="amd", on_machine="voicemail",
        voicemail_mode=mode, voicemail_message=VOICEMAIL,
    )
    placed = twilio_api.calls[call.twilio_call_sid]
    assert placed.param("MachineDetection") == "DetectMessageEnd"
    await client.send_audio(speech_like(1500))  # "You have reached ... leave a message"
    await client.send_silence(600)
    assert "response.create" not in [e["type"] for e in session.received]
    assert await twilio_api.send_amd(call.twilio_call_sid, "machine_end_beep") == 204
    message = await session.expect_event("response.create", timeout=5)
    instructions = message["response"]["instructions"]
    assert VOICEMAIL in instructions
    assert ("word for word" in instructions) == (mode == "text")
    await play_until_closed(client, timeout=30)
    record = await wait_for_call(call.twilio_call_sid, ended=True)
    assert record.answered_by == "machine_end_beep"
    assert record.end_reason == "voicemail"
    # The whole message was played before the hang-up.
    assert client.played_ms >= ScriptedResponse(text=VOICEMAIL).effective_audio_ms() - 40
    assert session.protocol_violations == []


async def test_a_machine_with_the_talk_policy_is_greeted(
    twilio_server: ServerProcess, standin: RealtimeStandIn, twilio_api: FakeTwilioAPI,
    hang_up_leftovers: None,
) -> None:
    call, client, session = await dial_and_answer(
        twilio_api, standin, greeting_wait="amd", on_machine="talk"
    )
    # The greeting waits for the verdict, so detection runs although machines are talked to.
    assert twilio_api.calls[call.twilio_call_sid].param("MachineDetection") == "Enable"
    await twilio_api.send_amd(call.twilio_call_sid, "machine_start")
    greeting = await session.expect_event("response.create", timeout=5)
    assert GREETING in greeting["response"]["instructions"]
    await client.hang_up()
    record = await wait_for_call(call.twilio_call_sid, ended=True)
    assert record.answered_by == "machine_start"


async def test_a_verdict_before_the_stream_started_is_applied(
    twilio_server: ServerProcess, standin: RealtimeStandIn, twilio_api: FakeTwilioAPI,
    hang_up_leftovers: None,
) -> None:
    agent = await sync_to_async(make_agent)(greeting_wait="amd", on_machine="hang_up")
    call = await aplace_call(CALLEE, agent=agent)
    client = track(await twilio_api.answer(call.twilio_call_sid))
    await twilio_api.send_amd(call.twilio_call_sid, "machine_start")  # no live call yet
    await client.start_call()
    await play_until_closed(client, timeout=30)
    record = await wait_for_call(call.twilio_call_sid, ended=True)
    assert record.end_reason == "answering_machine"
