"""Transfers the agent's allow-list refuses, and digits sent to the other side, end to end:
a real server, the real SDK on the Realtime stand-in, Twilio's REST stand-in recording every
request, the tones decoded from what Twilio's media stand-in heard."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from tests.dtmf_decode import decode
from tests.e2e import (
    enter_call,
    eventually,
    offer,
    play_until_closed,
    talk_until,
    wait_for_call,
)
from voiceconv.testing import (
    FakeTwilioAPI,
    RealtimeStandIn,
    ScriptedFunctionCall,
    ScriptedResponse,
    ServerProcess,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("hang_up_leftovers"),
]

ALLOWED = "+1415555*"
OUTSIDE = "+12125550199"
SORRY = "I am sorry, I cannot transfer you to that number."


@pytest.fixture(scope="module")
def server_settings() -> dict[str, object]:
    return {"HEARTBEAT_SECONDS": 1}


def tool_outputs(session: Any) -> list[dict[str, Any]]:
    return [json.loads(e["item"]["output"]) for e in session.received
            if e["type"] == "conversation.item.create"
            and e["item"].get("type") == "function_call_output"]


async def test_a_transfer_off_the_allow_list_is_refused_and_never_reaches_twilio(
    twilio_server: ServerProcess, standin: RealtimeStandIn, twilio_api: FakeTwilioAPI
) -> None:
    await sync_to_async(offer)("transfer_call", targets=ALLOWED)
    twilio_api.requests.clear()
    standin.responses.append(ScriptedResponse(
        text="", function_calls=[ScriptedFunctionCall("transfer_call", {"target": OUTSIDE})]))
    standin.responses.append(ScriptedResponse(text=SORRY))
    client = await enter_call(twilio_server)
    session = await standin.wait_for_session(0, timeout=10)
    # The model is told, in words it can say, and says them; the call goes on.
    await talk_until(client, lambda: any(
        o.get("content", [{}])[0].get("transcript") == SORRY
        for e in session.sent if e["type"] == "response.done"
        for o in e["response"]["output"] if o["type"] == "message"))
    [output] = tool_outputs(session)
    assert output["status"] == "not_allowed" and output["target"] == OUTSIDE
    assert "not one of the numbers" in output["error"]
    await talk_until(client, lambda: client.queued_bytes == 0)
    assert not client.closed.is_set()
    assert twilio_api.requests == []
    await client.hang_up()
    call = await wait_for_call(client.call_sid, ended=True, timeout=15)
    assert call.end_reason != "transferred"
    invocation = await call.tool_invocations.aget(tool_name="transfer_call")
    assert "not_allowed" in invocation.output
    await eventually(lambda: f"transfer_call to {OUTSIDE} refused" in twilio_server.log_text(), 10)


async def test_a_transfer_on_the_allow_list_goes_through(
    twilio_server: ServerProcess, standin: RealtimeStandIn, twilio_api: FakeTwilioAPI
) -> None:
    await sync_to_async(offer)("transfer_call", targets=ALLOWED)
    twilio_api.requests.clear()
    standin.responses.append(ScriptedResponse(
        text="", function_calls=[ScriptedFunctionCall("transfer_call",
                                                      {"target": "+1 415 555 0199"})]))
    standin.responses.append(ScriptedResponse(text="Putting you through."))
    client = await enter_call(twilio_server)
    await play_until_closed(client, timeout=20)
    [request] = await asyncio.to_thread(twilio_api.wait_for_requests, 1)
    assert request.form == {"Twiml": ["<Response><Dial>+14155550199</Dial></Response>"]}
    call = await wait_for_call(client.call_sid, ended=True)
    assert call.end_reason == "transferred"


async def test_the_agent_presses_keys_heard_as_dtmf_tones(
    twilio_server: ServerProcess, standin: RealtimeStandIn, twilio_api: FakeTwilioAPI
) -> None:
    await sync_to_async(offer)("send_dtmf", targets=ALLOWED)
    twilio_api.requests.clear()
    standin.responses.append(ScriptedResponse(
        text="Let me choose billing.",
        function_calls=[ScriptedFunctionCall("send_dtmf", {"digits": "2w1#"})]))
    standin.responses.append(ScriptedResponse(text="I pressed two, one, hash."))
    client = await enter_call(twilio_server)
    session = await standin.wait_for_session(0, timeout=10)
    await talk_until(client, lambda: len(
        [e for e in session.sent if e["type"] == "response.done"]) >= 2)
    await talk_until(client, lambda: client.queued_bytes == 0)
    assert tool_outputs(session) == [{"status": "sent", "digits": "2w1#"}]
    # What Twilio played to the other side: speech, the three key presses, speech again.
    assert decode(bytes(client.heard)) == "21#"
    assert twilio_api.requests == []  # in-band: no REST request, the stream goes on
    assert not client.closed.is_set()
    await client.hang_up()
    call = await wait_for_call(client.call_sid, ended=True, timeout=15)
    assert await call.tool_invocations.filter(tool_name="send_dtmf", error="").aexists()


@pytest.mark.skipif(not os.environ.get("REDIS_URL"),
                    reason="the control API crosses processes: needs REDIS_URL")
async def test_the_control_api_sends_digits_and_refuses_an_unlisted_transfer(
    twilio_server: ServerProcess, standin: RealtimeStandIn, twilio_api: FakeTwilioAPI
) -> None:
    from voiceconv import control

    await sync_to_async(offer)("end_call", targets=ALLOWED)
    twilio_api.requests.clear()
    client = await enter_call(twilio_server)
    await talk_until(client, lambda: client.queued_bytes == 0 and len(client.heard) > 0)
    call = await wait_for_call(client.call_sid)
    from voiceconv.live import live_calls

    async def live() -> bool:
        return await live_calls().filter(pk=call.pk).aexists()

    for _ in range(100):
        if await live():
            break
        await client.send_silence(100)
        await asyncio.sleep(0.1)
    refused = await control.atransfer(client.call_sid, OUTSIDE, by="ops")
    assert not refused and "not one of the numbers" in refused.detail
    heard_before = len(client.heard)
    sent = await control.asend_dtmf(client.call_sid, "9*", by="ops")
    assert sent, sent.detail
    await talk_until(client, lambda: client.queued_bytes == 0
                     and len(client.heard) > heard_before + 2000)
    assert decode(bytes(client.heard[heard_before:])) == "9*"
    assert twilio_api.requests == []
    await client.hang_up()
    call = await wait_for_call(client.call_sid, ended=True, timeout=15)
    texts = [t async for t in call.transcript_entries.filter(role="control").values_list(
        "text", flat=True)]
    assert any("send_dtmf by ops: 9*" in t for t in texts), texts
