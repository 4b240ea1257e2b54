"""The SIP path end to end: a real server process, the real SDK, the stand-in as OpenAI.

The "trunk" is the stand-in: it makes a call, the test delivers its signed
``realtime.call.incoming`` webhook to the app, and the app accepts the call over REST, attaches
to its sideband socket (``?call_id=``) and runs it there: no audio crosses any socket.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator, Iterator

import pytest
from asgiref.sync import sync_to_async

from tests.conftest import OPENAI_KEY, ROOT, server_env
from tests.e2e import eventually
from voiceconv.testing import (
    RealtimeStandIn,
    ScriptedFunctionCall,
    ScriptedResponse,
    send_call_incoming,
)
from voiceconv.testing.server import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SECRET = "whsec_" + base64.b64encode(b"voiceconv-sip-test-secret-0123456").decode()
CALLER = "+14155550123"
NUMBER = "+14155550100"


@pytest.fixture(scope="module")
def sip_server(
    django_db_setup: None, django_db_blocker: pytest.FixtureRequest, standin_port: int
) -> Iterator[ServerProcess]:
    """The example project, its webhook secret set, its OpenAI side the stand-in's port."""
    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        env = server_env(standin_port, OPENAI_WEBHOOK_SECRET=SECRET)
    with ServerProcess(env=env, cwd=ROOT) as server:
        yield server


@pytest.fixture
async def sip_standin(standin_port: int) -> AsyncIterator[RealtimeStandIn]:
    async with RealtimeStandIn(port=standin_port, api_key=OPENAI_KEY, sip=True) as s:
        yield s


def webhook_url(server: ServerProcess) -> str:
    return server.http_url + "/twilio/sip/openai/"


def offer(*names: str, transfer_targets: str = "") -> None:
    from voiceconv.models import Agent, AgentTelephony, ToolDefinition

    agent = Agent.objects.get(is_default=True)
    agent.tools.set([ToolDefinition.objects.get_or_create(name=n)[0] for n in names])
    AgentTelephony.objects.update_or_create(
        agent=agent, defaults={"transfer_targets": transfer_targets})


async def wait_for_call(call_id: str, *, ended: bool = False, timeout: float = 10.0) -> object:
    from voiceconv.models import Call

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        call = await Call.objects.filter(openai_call_id=call_id).afirst()
        if call is not None and (not ended or call.ended_at is not None):
            return call
        if loop.time() > deadline:
            raise AssertionError(f"SIP call {call_id} not recorded (ended={ended}): {call}")
        await asyncio.sleep(0.05)


async def test_a_sip_call_is_accepted_runs_its_tool_on_the_sideband_and_is_hung_up(
    sip_server: ServerProcess, sip_standin: RealtimeStandIn
) -> None:
    from voiceconv.models import Call

    await sync_to_async(offer)("get_time", "end_call")
    standin = sip_standin
    standin.responses.extend([
        ScriptedResponse(text="Hello, how can I help?"),
        ScriptedResponse(text="", function_calls=[ScriptedFunctionCall("get_time")]),
        ScriptedResponse(text="It is a quarter past ten."),
        ScriptedResponse(text="", function_calls=[
            ScriptedFunctionCall("end_call", {"reason": "caller is done"})]),
        ScriptedResponse(text="Goodbye!"),
    ])
    standin.caller_transcripts.extend(["What time is it?", "Thanks, bye."])
    call = standin.new_sip_call(CALLER, NUMBER)
    status, webhook_id = await send_call_incoming(webhook_url(sip_server), call, SECRET)
    assert status == 200
    assert await call.wait_for("accepted", "rejected") == "accepted"
    accept = call.accept
    assert accept is not None
    assert accept["type"] == "realtime" and accept["model"]
    assert sorted(t["name"] for t in accept["tools"]) == ["end_call", "get_time"]
    assert "format" not in accept["audio"]["input"]  # the SIP leg negotiates the codec

    session = await standin.wait_for_session(0, timeout=10)
    assert session.call_id == call.call_id
    await session.expect_event("session.update", timeout=5)
    await session.expect_event("response.create", timeout=5)  # the greeting
    await eventually(lambda: "output_audio_buffer.stopped" in session.sent_types(), 10)

    await session.trigger_speech_stopped()  # "What time is it?"
    output = await session.expect_event("conversation.item.create", timeout=10)
    assert output["item"]["type"] == "function_call_output"
    assert set(json.loads(output["item"]["output"])) == {"time"}
    await session.expect_event("response.create", timeout=5)
    await eventually(lambda: session.sent_types().count("output_audio_buffer.stopped") >= 2, 10)

    await session.trigger_speech_stopped()  # "Thanks, bye." → end_call → "Goodbye!"
    assert await call.wait_for("hung_up", timeout=15) == "hung_up"
    row = await wait_for_call(call.call_id, ended=True)
    assert isinstance(row, Call)
    assert row.transport == Call.Transport.SIP
    assert row.end_reason == "agent_ended"
    assert (row.from_number, row.to_number) == (CALLER, NUMBER)
    assert row.openai_webhook_id == webhook_id
    entries = [(e.role, e.text) async for e in row.transcript_entries.order_by("sequence")]
    roles = [role for role, _ in entries]
    assert ("caller", "What time is it?") in entries
    assert ("assistant", "It is a quarter past ten.") in entries
    assert ("assistant", "Goodbye!") in entries
    assert roles.count("tool") == 2
    tools = [t.tool_name async for t in row.tool_invocations.order_by("pk")]
    assert tools == ["get_time", "end_call"]
    assert session.appends == []  # no audio on a sideband
    assert session.protocol_violations == []
    assert call.protocol_violations == []
    assert call.verbs() == ["accept", "hangup"]


async def test_a_retried_webhook_is_answered_once(
    sip_server: ServerProcess, sip_standin: RealtimeStandIn
) -> None:
    call = sip_standin.new_sip_call(CALLER, NUMBER)
    event = call.event()
    status, webhook_id = await send_call_incoming(webhook_url(sip_server), call, SECRET,
                                                  event=event)
    assert status == 200
    await call.wait_for("accepted")
    again, _ = await send_call_incoming(webhook_url(sip_server), call, SECRET,
                                        event=event, webhook_id=webhook_id)
    assert again == 200
    await sip_standin.wait_for_session(0, timeout=10)
    await asyncio.sleep(0.5)
    assert call.verbs() == ["accept"]  # accepted once, not twice
    await call.caller_hangs_up()
    row = await wait_for_call(call.call_id, ended=True)
    assert getattr(row, "end_reason", None) == "caller_hung_up"
    assert sip_standin.sessions[0].protocol_violations == []


async def test_a_forged_webhook_is_refused(
    sip_server: ServerProcess, sip_standin: RealtimeStandIn
) -> None:
    from voiceconv.models import Call

    call = sip_standin.new_sip_call(CALLER, NUMBER)
    forged = "whsec_" + base64.b64encode(b"not-the-project-secret-0123456789").decode()
    status, webhook_id = await send_call_incoming(webhook_url(sip_server), call, forged)
    assert status == 400
    stale, _ = await send_call_incoming(webhook_url(sip_server), call, SECRET,
                                        timestamp=1_000_000_000)
    assert stale == 400
    await asyncio.sleep(0.3)
    assert call.requests == []
    assert not await Call.objects.filter(openai_call_id=call.call_id).aexists()
    await eventually(lambda: f"OpenAI webhook {webhook_id} refused" in sip_server.log_text(), 5)


async def test_a_call_nobody_answers_is_rejected(
    sip_server: ServerProcess, sip_standin: RealtimeStandIn
) -> None:
    from voiceconv.models import Agent, Call

    await Agent.objects.filter(is_default=True).aupdate(enabled=False)
    try:
        call = sip_standin.new_sip_call(CALLER, "+14155550999")
        status, _ = await send_call_incoming(webhook_url(sip_server), call, SECRET)
        assert status == 200
        assert await call.wait_for("rejected", "accepted") == "rejected"
        assert call.reject_status == 404
        row = await wait_for_call(call.call_id, ended=True)
        assert isinstance(row, Call)
        assert row.end_reason == "refused"
    finally:
        await Agent.objects.filter(is_default=True).aupdate(enabled=True)


async def test_transfer_call_refers_the_caller(
    sip_server: ServerProcess, sip_standin: RealtimeStandIn
) -> None:
    from voiceconv.models import Call

    await sync_to_async(offer)("transfer_call", transfer_targets="+14155550199")
    sip_standin.responses.extend([
        ScriptedResponse(text="", function_calls=[
            ScriptedFunctionCall("transfer_call", {"target": "+14155550199"})]),
        ScriptedResponse(text="Transferring you now."),
    ])
    call = sip_standin.new_sip_call(CALLER, NUMBER)
    status, _ = await send_call_incoming(webhook_url(sip_server), call, SECRET)
    assert status == 200
    assert await call.wait_for("referred", "hung_up", "rejected", timeout=20) == "referred"
    assert call.refer_target == "tel:+14155550199"
    row = await wait_for_call(call.call_id, ended=True)
    assert isinstance(row, Call)
    assert row.end_reason == "transferred"
    assert call.verbs() == ["accept", "refer"]
    assert call.protocol_violations == []


@pytest.mark.skipif(not (os.environ.get("REDIS_URL") and os.environ.get("DATABASE_URL")),
                    reason="the control API reaches the server process through Redis")
async def test_the_control_api_hangs_up_a_sip_call(
    sip_server: ServerProcess, sip_standin: RealtimeStandIn
) -> None:
    from voiceconv import control

    sip_standin.default_response = ScriptedResponse(text="Hello.")
    call = sip_standin.new_sip_call(CALLER, NUMBER)
    status, _ = await send_call_incoming(webhook_url(sip_server), call, SECRET)
    assert status == 200
    session = await sip_standin.wait_for_session(0, timeout=10)
    await eventually(lambda: "output_audio_buffer.stopped" in session.sent_types(), 10)
    await wait_for_call(call.call_id)

    async def started() -> bool:
        from voiceconv.models import Call

        return await Call.objects.filter(openai_call_id=call.call_id,
                                         stream_started_at__isnull=False).aexists()

    for _ in range(100):
        if await started():
            break
        await asyncio.sleep(0.05)
    result = await control.ahang_up(call.call_id, reason="operator", by="test")
    assert result, result.detail
    assert await call.wait_for("hung_up", timeout=10) == "hung_up"
    row = await wait_for_call(call.call_id, ended=True)
    assert getattr(row, "end_reason", None) == "operator"
