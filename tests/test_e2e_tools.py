"""Tools end to end: a real server, the real SDK, the stand-in asking for function calls."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from asgiref.sync import sync_to_async

from tests.e2e import enter_call, eventually, offer, play_until_closed, wait_for_call
from voiceconv.testing import (
    RealtimeStandIn,
    ScriptedFunctionCall,
    ScriptedResponse,
)
from voiceconv.testing.server import ServerProcess
from voiceconv.testing.twilio_api import FakeTwilioAPI

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def server_settings() -> dict[str, object]:
    return {"TOOL_HOLDING_DELAY": 0.5}


@pytest.fixture(scope="module")
def server_environ() -> dict[str, str]:
    """The test app's slow tool, installed in the server."""
    return {"EXTRA_INSTALLED_APPS": "tests.toolapp"}


async def test_the_example_tool_answers_through_the_model(
    e2e_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    standin.responses.append(
        ScriptedResponse(text="", function_calls=[ScriptedFunctionCall("get_time")])
    )
    standin.responses.append(ScriptedResponse(text="It is a quarter past ten."))
    client = await enter_call(e2e_server)
    session = await standin.wait_for_session(0, timeout=10)
    update = await session.expect_event("session.update")
    assert [t["name"] for t in update["session"]["tools"]] == ["get_time"]
    assert update["session"]["tools"][0]["type"] == "function"
    await session.expect_event("response.create")  # the greeting
    output = await session.expect_event("conversation.item.create", timeout=5)
    assert output["item"]["type"] == "function_call_output"
    assert set(json.loads(output["item"]["output"])) == {"time"}
    follow_up = await session.expect_event("response.create", timeout=5)
    assert "instructions" not in follow_up.get("response", {})
    assert sum(e["type"] == "response.create" for e in session.received) == 2
    await eventually(lambda: sum(e["type"] == "response.done" for e in session.sent) >= 2)
    await client.send_silence(2500)
    await client.hang_up()
    call = await wait_for_call(client.call_sid, ended=True)
    invocation = await call.tool_invocations.afirst()
    assert invocation.tool_name == "get_time"
    assert invocation.error == ""
    assert "time" in json.loads(invocation.output)
    assert session.protocol_violations == []


async def test_a_slow_sync_tool_holds_the_line_and_delays_no_caller_frame(
    twilio_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    await sync_to_async(offer)("slow_lookup")
    standin.responses.append(ScriptedResponse(
        text="", function_calls=[ScriptedFunctionCall("slow_lookup", {"order_id": "A17"})]))
    standin.responses.append(ScriptedResponse(text="One moment."))  # the holding line
    standin.responses.append(ScriptedResponse(text="Order A17 has shipped."))
    client = await enter_call(twilio_server, realtime=True)
    session = await standin.wait_for_session(0, timeout=10)
    await session.expect_event("response.create")  # greeting → function call
    await client.send_silence(3000)  # 3 s of real-time caller audio while the tool sleeps 2 s
    holding = await session.expect_event("response.create", timeout=2)
    assert holding["response"]["conversation"] == "none"
    assert "One moment while I look that up." in holding["response"]["instructions"]
    output = await session.expect_event("conversation.item.create", timeout=3)
    assert json.loads(output["item"]["output"]) == {"order_id": "A17", "status": "shipped"}
    await eventually(lambda: len(session.appends) >= len(client.sent_frames))
    # Frames reach OpenAI in order, each one shortly after the caller sent it, tool or not.
    assert [b for _, b in session.appends] == [b for _, b in client.sent_frames]
    delays = [a - s for (s, _), (a, _) in zip(client.sent_frames, session.appends, strict=True)]
    assert max(delays) < 0.25, f"a caller frame waited {max(delays) * 1000:.0f} ms"
    await client.hang_up()
    call = await wait_for_call(client.call_sid, ended=True)
    invocation = await call.tool_invocations.afirst()
    assert invocation.duration_ms >= 2000


async def test_end_call_hangs_up_after_the_goodbye_was_heard(
    twilio_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    await sync_to_async(offer)("end_call")
    standin.responses.append(ScriptedResponse(
        text="", function_calls=[ScriptedFunctionCall("end_call", {"reason": "caller is done"})]))
    standin.responses.append(ScriptedResponse(text="Thanks for calling, goodbye!"))
    client = await enter_call(twilio_server)
    session = await standin.wait_for_session(0, timeout=10)
    await eventually(lambda: sum(e["type"] == "response.done" for e in session.sent) >= 2)
    goodbye = sum(len(base64.b64decode(d)) for _, _, d in session.sent_deltas)
    await play_until_closed(client)
    # Every byte of the goodbye was played before the stream closed: nothing cut off.
    assert client.received_bytes == goodbye
    assert client.queued_bytes == 0
    assert len(client.heard) == client.received_bytes
    call = await wait_for_call(client.call_sid, ended=True)
    assert call.end_reason == "agent_ended"
    assert await call.tool_invocations.filter(tool_name="end_call").aexists()


async def test_transfer_call_dials_the_target_through_the_rest_api(
    twilio_server: ServerProcess, standin: RealtimeStandIn, twilio_api: FakeTwilioAPI
) -> None:
    await sync_to_async(offer)("transfer_call", targets="+14155550199")
    twilio_api.requests.clear()
    standin.responses.append(ScriptedResponse(
        text="", function_calls=[ScriptedFunctionCall("transfer_call",
                                                      {"target": "+14155550199"})]))
    standin.responses.append(ScriptedResponse(text="Putting you through now."))
    client = await enter_call(twilio_server)
    await play_until_closed(client)
    [request] = await asyncio.to_thread(twilio_api.wait_for_requests, 1)
    assert request.method == "POST"
    assert request.path == (
        f"/2010-04-01/Accounts/{'AC' + '0' * 32}/Calls/{client.call_sid}.json"
    )
    assert request.form == {"Twiml": ["<Response><Dial>+14155550199</Dial></Response>"]}
    assert request.headers["Authorization"].startswith("Basic ")
    assert client.queued_bytes == 0  # "putting you through" was heard first
    call = await wait_for_call(client.call_sid, ended=True)
    assert call.end_reason == "transferred"
