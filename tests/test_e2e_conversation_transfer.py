"""Rule 4 end to end: a transfer is announced before Twilio dials, and recorded as a transfer
even when Twilio's ``stop`` arrives before its REST reply."""

from __future__ import annotations

import asyncio
import base64

import pytest
from asgiref.sync import sync_to_async

from tests.e2e import enter_call, eventually, offer, play_until_closed, wait_for_call
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

TARGET = "+14155550199"
THROUGH = "Putting you through now."


def script_transfer(standin: RealtimeStandIn) -> None:
    # The greeting's response asks for the transfer; the next one announces it.
    standin.responses.append(
        ScriptedResponse(
            text="", function_calls=[ScriptedFunctionCall("transfer_call", {"target": TARGET})]
        )
    )
    standin.responses.append(ScriptedResponse(text=THROUGH))


async def test_the_transfer_is_announced_and_heard_before_twilio_dials(
    twilio_server: ServerProcess, standin: RealtimeStandIn, twilio_api: FakeTwilioAPI
) -> None:
    await sync_to_async(offer)("transfer_call", targets=TARGET)
    twilio_api.requests.clear()
    twilio_api.delay = 0.0
    script_transfer(standin)
    client = await enter_call(twilio_server)
    session = await standin.wait_for_session(0, timeout=10)
    heard_at_dial: list[int] = []

    async def watch() -> None:
        while not twilio_api.requests:
            await asyncio.sleep(0.002)
        heard_at_dial.append(len(client.heard))

    watcher = asyncio.create_task(watch())
    await play_until_closed(client, timeout=20)
    await asyncio.wait_for(watcher, 10)
    # The reply after the tool's output was requested...
    output_at = next(
        i
        for i, e in enumerate(session.received)
        if e["type"] == "conversation.item.create"
        and e["item"].get("type") == "function_call_output"
    )
    assert any(e["type"] == "response.create" for e in session.received[output_at:])
    # ... and heard whole before Twilio was asked to dial.
    done = [e for e in session.sent if e["type"] == "response.done"]
    reply_id = next(
        o["id"]
        for d in done
        for o in d["response"]["output"]
        if o["type"] == "message" and o["content"][0]["transcript"] == THROUGH
    )
    reply_bytes = sum(len(base64.b64decode(b)) for _, i, b in session.sent_deltas if i == reply_id)
    assert reply_bytes > 0
    assert heard_at_dial and heard_at_dial[0] >= reply_bytes, (heard_at_dial, reply_bytes)
    [request] = twilio_api.requests
    assert request.form == {"Twiml": [f"<Response><Dial>{TARGET}</Dial></Response>"]}
    call = await wait_for_call(client.call_sid, ended=True)
    assert call.end_reason == "transferred"


async def test_stop_before_twilios_rest_reply_still_ends_as_transferred(
    twilio_server: ServerProcess, standin: RealtimeStandIn, twilio_api: FakeTwilioAPI
) -> None:
    await sync_to_async(offer)("transfer_call", targets=TARGET)
    twilio_api.requests.clear()
    twilio_api.delay = 3.0  # Twilio moves the call (stop) before its REST reply arrives
    script_transfer(standin)
    try:
        client = await enter_call(twilio_server)
        while not twilio_api.requests:
            await client.send_silence(100)
            await asyncio.sleep(0.005)
        await client.hang_up()  # Twilio's stop, then the socket closes
        call = await wait_for_call(client.call_sid, ended=True, timeout=15)
    finally:
        twilio_api.delay = 0.0
    assert call.end_reason == "transferred"
    _ = eventually
