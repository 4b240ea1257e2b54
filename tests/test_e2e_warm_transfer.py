"""Warm transfer end to end: the agent briefs a human on a call of its own (placed through
Twilio's REST stand-in), the human's status callbacks come back signed, and the caller is
either bridged into the conference or, when nobody answers, told and kept by the agent."""

from __future__ import annotations

import asyncio
import json
import os
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from tests.conftest import PUBLIC_URL
from tests.e2e import enter_call, offer, play_until_closed, talk_until, wait_for_call
from voiceconv.testing import (
    FakeTwilioAPI,
    RealtimeStandIn,
    ScriptedFunctionCall,
    ScriptedResponse,
    ServerProcess,
    TwilioStreamClient,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("hang_up_leftovers"),
]

HUMAN = "+14155550188"
BRIEF = "Ada Lovelace is calling about a refund for order 17; she has the receipt."
HOLD = "Please hold while I connect you."
SORRY = "I am sorry, nobody answered. Can I help you myself?"


@pytest.fixture(scope="module")
def server_settings() -> dict[str, object]:
    return {"WARM_TRANSFER_RING_TIMEOUT": 60}


def said(session: Any, text: str) -> bool:
    return any(o["type"] == "message" and o["content"][0].get("transcript") == text
               for e in session.sent if e["type"] == "response.done"
               for o in e["response"]["output"])


async def begin(twilio_server: ServerProcess, standin: RealtimeStandIn,
                twilio_api: FakeTwilioAPI) -> tuple[TwilioStreamClient, Any, Any]:
    """A call whose agent starts a warm transfer; the caller has heard the hold message and
    the human's phone rings."""
    await sync_to_async(offer)("warm_transfer", targets=HUMAN)
    twilio_api.requests.clear()
    twilio_api.calls.clear()
    standin.responses.append(ScriptedResponse(text="", function_calls=[
        ScriptedFunctionCall("warm_transfer", {"target": "+1 415 555 0188", "brief": BRIEF})]))
    standin.responses.append(ScriptedResponse(text=HOLD))
    client = await enter_call(twilio_server)
    session = await standin.wait_for_session(0, timeout=10)
    await talk_until(client, lambda: bool(twilio_api.calls) and said(session, HOLD))
    await talk_until(client, lambda: client.queued_bytes == 0)
    [human] = list(twilio_api.calls.values())
    return client, session, human


async def test_an_answered_warm_transfer_briefs_the_human_and_bridges_the_caller(
    twilio_server: ServerProcess, standin: RealtimeStandIn, twilio_api: FakeTwilioAPI
) -> None:
    client, session, human = await begin(twilio_server, standin, twilio_api)
    conference = f"voiceconv-{client.call_sid}"
    # The human's leg: from the agent's number, ringing for the configured time, the brief
    # said before the human enters (and starts) the conference.
    assert human.to == HUMAN and human.param("Timeout") == "60"
    twiml = ET.fromstring(human.param("Twiml"))
    assert [child.tag for child in twiml] == ["Say", "Dial"]
    assert twiml.find("Say").text == BRIEF  # type: ignore[union-attr]
    room = twiml.find("Dial/Conference")
    assert room is not None and room.text == conference
    assert room.get("startConferenceOnEnter") == "true"
    assert human.param("StatusCallback").startswith(PUBLIC_URL)
    outputs = [json.loads(e["item"]["output"]) for e in session.received
               if e["type"] == "conversation.item.create"
               and e["item"].get("type") == "function_call_output"]
    assert outputs[0]["status"] == "calling" and outputs[0]["target"] == HUMAN
    assert not client.closed.is_set()  # the caller holds on the stream

    assert await twilio_api.send_status(human.sid, "in-progress") == 204
    await play_until_closed(client, timeout=20)
    # Twilio's view: the human, then the caller (moved by a REST update), in the same room.
    assert twilio_api.conference_members(conference) == [human.sid, client.call_sid]
    update = twilio_api.requests[-1]
    assert update.path.endswith(f"/Calls/{client.call_sid}.json")
    caller_room = ET.fromstring(update.form["Twiml"][0]).find("Dial/Conference")
    assert caller_room is not None and caller_room.get("startConferenceOnEnter") == "false"
    call = await wait_for_call(client.call_sid, ended=True, timeout=15)
    assert call.end_reason == "transferred"
    row = await call.warm_transfers.aget()
    assert (row.status, row.target, row.human_call_sid, row.brief) == (
        "connected", HUMAN, human.sid, BRIEF)
    assert row.human_status == "in-progress" and row.answered_at is not None


async def test_an_unanswered_warm_transfer_returns_the_caller_to_the_agent(
    twilio_server: ServerProcess, standin: RealtimeStandIn, twilio_api: FakeTwilioAPI
) -> None:
    client, session, human = await begin(twilio_server, standin, twilio_api)
    standin.responses.append(ScriptedResponse(text=SORRY))
    heard = len(client.heard)
    assert await twilio_api.send_status(human.sid, "no-answer") == 204
    # The agent is told and speaks again, to the caller still on the stream.
    await talk_until(client, lambda: said(session, SORRY))
    told = [e for e in session.received if e["type"] == "response.create"
            and "did not answer" in str((e.get("response") or {}).get("instructions"))]
    assert told
    await talk_until(client, lambda: client.queued_bytes == 0 and len(client.heard) > heard)
    assert not client.closed.is_set()
    # The caller's call was never moved: the only request placed the human's leg.
    assert len(twilio_api.requests) == 1 and twilio_api.requests[0].path.endswith("Calls.json")
    call = await wait_for_call(client.call_sid)
    row = await call.warm_transfers.aget()
    assert (row.status, row.human_status, row.human_call_sid) == (
        "not_answered", "no-answer", human.sid)
    assert row.finished_at is not None and row.answered_at is None
    # Automatic answers are back on: the session update re-enabled them.
    updates = [e["session"]["audio"]["input"]["turn_detection"].get("create_response")
               for e in session.received if e["type"] == "session.update"
               and "turn_detection" in ((e["session"].get("audio") or {}).get("input") or {})]
    assert updates[-2:] == [False, True]
    await client.hang_up()
    call = await wait_for_call(client.call_sid, ended=True, timeout=15)
    assert call.end_reason == "caller_hung_up"


async def test_the_persons_phone_stops_ringing_when_the_caller_hangs_up(
    twilio_server: ServerProcess, standin: RealtimeStandIn, twilio_api: FakeTwilioAPI
) -> None:
    client, _, human = await begin(twilio_server, standin, twilio_api)
    await eventually_placed(human.sid)
    await client.hang_up()
    call = await wait_for_call(client.call_sid, ended=True, timeout=15)
    assert call.end_reason == "caller_hung_up"
    [_, cancel] = await asyncio.to_thread(twilio_api.wait_for_requests, 2, 15)
    assert cancel.path.endswith(f"/Calls/{human.sid}.json")
    assert cancel.form == {"Status": ["completed"]}
    row = await call.warm_transfers.aget()
    assert row.status == "failed" and "caller_hung_up" in row.detail


async def eventually_placed(human_sid: str) -> None:
    """The server has stored the person's CallSid (Twilio's reply to the create)."""
    from voiceconv.models import WarmTransfer

    for _ in range(200):
        if await WarmTransfer.objects.filter(human_call_sid=human_sid).aexists():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the person's CallSid was not recorded")


@pytest.mark.skipif(not os.environ.get("REDIS_URL"),
                    reason="the control API crosses processes: needs REDIS_URL")
async def test_the_control_api_starts_a_warm_transfer_on_the_allow_list_only(
    twilio_server: ServerProcess, standin: RealtimeStandIn, twilio_api: FakeTwilioAPI
) -> None:
    from voiceconv import control
    from voiceconv.live import live_calls

    await sync_to_async(offer)("warm_transfer", targets=HUMAN)
    twilio_api.requests.clear()
    twilio_api.calls.clear()
    client = await enter_call(twilio_server)
    call = await wait_for_call(client.call_sid)
    for _ in range(100):
        if await live_calls().filter(pk=call.pk).aexists():
            break
        await client.send_silence(100)
        await asyncio.sleep(0.1)
    refused = await control.awarm_transfer(client.call_sid, "+12125550199", BRIEF, by="ops")
    assert not refused and "not one of the numbers" in refused.detail
    started = await control.awarm_transfer(client.call_sid, HUMAN, BRIEF, by="ops")
    assert started, started.detail
    await talk_until(client, lambda: bool(twilio_api.calls))
    [human] = list(twilio_api.calls.values())
    assert ET.fromstring(human.param("Twiml")).find("Say").text == BRIEF  # type: ignore[union-attr]
    await eventually_placed(human.sid)
    assert await twilio_api.send_status(human.sid, "in-progress") == 204
    await play_until_closed(client, timeout=60)
    call = await wait_for_call(client.call_sid, ended=True, timeout=60)
    assert call.end_reason == "transferred"
    assert (await call.warm_transfers.aget()).status == "connected"
    texts = [t async for t in call.transcript_entries.filter(role="control").values_list(
        "text", flat=True)]
    assert any(t.startswith(f"warm_transfer by ops: {HUMAN}") for t in texts), texts
