"""Who gets into a browser call, and that it is the same call as a phone call.

A real server process, real websockets: the softphone route admits only staff sessions with
the permission, from the site's own origin; it ignores Twilio's stream token; the Twilio
route ignores session cookies.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.template import Context, Template
from django.test import RequestFactory
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests import softphone as kit
from tests.conftest import AUTH_TOKEN
from voiceconv import security
from voiceconv.models import Agent, Call
from voiceconv.softphone import may_place_browser_call
from voiceconv.testing import RealtimeStandIn, ScriptedResponse, ServerProcess, TwilioStreamClient

softphone_server = kit.softphone_server

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PATH = "/voiceconv/softphone/stream/"


def start_message(stream_sid: str, **params: str) -> str:
    return json.dumps({
        "event": "start", "sequenceNumber": "1", "streamSid": stream_sid,
        "start": {"accountSid": "", "streamSid": stream_sid, "callSid": "CA" + "1" * 32,
                  "tracks": ["inbound"],
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                  "customParameters": params},
    })


async def open_softphone(server: ServerProcess, cookie: str | None, origin: str | None) -> Any:
    headers = []
    if cookie:
        headers.append(("Cookie", cookie))
    if origin:
        headers.append(("Origin", origin))
    return await connect(server.ws_url + PATH, additional_headers=headers, open_timeout=10)


async def refused_status(server: ServerProcess, cookie: str | None, origin: str | None) -> int:
    with pytest.raises(InvalidStatus) as refused:
        ws = await open_softphone(server, cookie, origin)
        await ws.close()
    return refused.value.response.status_code


async def test_the_softphone_route_admits_only_staff_with_the_permission(
    softphone_server: ServerProcess,
) -> None:
    origin = softphone_server.http_url
    staff = await sync_to_async(kit.make_staff)("allowed")
    no_perm = await sync_to_async(kit.make_staff)("no-perm", permission=False)
    not_staff = await sync_to_async(kit.make_staff)("not-staff", staff=False)
    assert await refused_status(softphone_server, None, origin) == 403
    for user in (no_perm, not_staff):
        cookie = await sync_to_async(kit.session_cookie)(user)
        assert await refused_status(softphone_server, cookie, origin) == 403
    cookie = await sync_to_async(kit.session_cookie)(staff)
    # The session alone is not enough: the page must come from the site itself.
    assert await refused_status(softphone_server, cookie, "https://evil.example") == 403
    assert await refused_status(softphone_server, cookie, None) == 403
    ws = await open_softphone(softphone_server, cookie, origin)
    await ws.close()


async def test_a_twilio_stream_token_does_not_open_the_softphone(
    softphone_server: ServerProcess,
) -> None:
    """Twilio's way in (signature, stream token) is no way into the browser route."""
    call_sid = "CA" + "2" * 32
    client = TwilioStreamClient(
        softphone_server.ws_url + PATH, call_sid=call_sid, auth_token=AUTH_TOKEN,
        custom_parameters={"call_token": security.make_stream_token(call_sid)},
    )
    with pytest.raises(InvalidStatus) as refused:
        await client.start_call()
    assert refused.value.response.status_code == 403
    await client.close()
    assert not await Call.objects.filter(twilio_call_sid=call_sid).aexists()


async def test_the_twilio_route_ignores_a_session_cookie(
    softphone_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    staff = await sync_to_async(kit.make_staff)("cookie-bearer")
    cookie = await sync_to_async(kit.session_cookie)(staff)
    # Signed as Twilio would sign it, but with a staff session instead of a stream token.
    client = TwilioStreamClient(
        softphone_server.ws_url + "/twilio/stream/",
        auth_token=AUTH_TOKEN,
        signature_url="wss://voice.example.test/twilio/stream/",
        extra_headers={"Cookie": cookie, "Origin": softphone_server.http_url},
    )
    await client.start_call()
    assert await client.wait_closed(timeout=10) == 4403  # no stream token: refused
    assert standin.sessions == []
    assert not await Call.objects.filter(twilio_call_sid=client.call_sid).aexists()


async def test_a_browser_call_is_recorded_under_the_servers_own_sid(
    softphone_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    """The page names an agent; the call sid, caller and direction are the server's."""
    agent = await Agent.objects.acreate(name="Sales", slug="sales")
    staff = await sync_to_async(kit.make_staff)("seller")
    cookie = await sync_to_async(kit.session_cookie)(staff)
    standin.responses.append(ScriptedResponse(text="Hello from sales.", audio_ms=400))
    ws = await open_softphone(softphone_server, cookie, softphone_server.http_url)
    stream_sid = "MZ" + "3" * 32
    await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    await ws.send(start_message(stream_sid, agent="sales", call_token="forged", topic="demo",
                                direction="inbound"))
    hello = json.loads(await ws.recv())
    assert hello["event"] == "call"
    call_sid = hello["call"]["callSid"]
    assert call_sid.startswith("BR") and call_sid != "CA" + "1" * 32
    session = await standin.wait_for_session(timeout=10)
    await session.expect_event("session.update", timeout=10)
    call = await Call.objects.aget(twilio_call_sid=call_sid)
    assert call.direction == Call.Direction.BROWSER
    assert call.agent_id == agent.pk and call.from_number == "browser:seller"
    assert call.custom_parameters["topic"] == "demo"
    assert "call_token" not in call.custom_parameters
    assert hello["call"]["reviewUrl"] == f"/admin/voiceconv/call/{call.pk}/change/"
    await ws.close()


async def test_a_browser_call_to_an_unknown_agent_is_refused(
    softphone_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    staff = await sync_to_async(kit.make_staff)("lost")
    cookie = await sync_to_async(kit.session_cookie)(staff)
    ws = await open_softphone(softphone_server, cookie, softphone_server.http_url)
    await ws.send(start_message("MZ" + "4" * 32, agent="nobody"))
    await ws.send(json.dumps({"event": "media", "streamSid": "MZ" + "4" * 32,
                              "media": {"timestamp": "0", "payload": ""}}))
    await ws.wait_closed()
    assert ws.close_code == 4404
    assert standin.sessions == []


@pytest.mark.parametrize(
    ("is_staff", "permission", "allowed"),
    [(True, True, True), (True, False, False), (False, True, False)],
)
def test_the_panel_is_shown_only_to_those_who_may_call(
    is_staff: bool, permission: bool, allowed: bool
) -> None:
    agent = Agent.objects.create(name="Panel", slug="panel")
    user = kit.make_staff(f"u{is_staff}{permission}", staff=is_staff, permission=permission)
    user = type(user).objects.get(pk=user.pk)  # fresh permission cache
    assert may_place_browser_call(user) is allowed
    request = RequestFactory().get("/")
    request.user = user
    html = Template("{% load voiceconv_softphone %}{% softphone_panel agent %}").render(
        Context({"request": request, "agent": agent})
    )
    assert ("data-voiceconv-softphone" in html) is allowed
    if allowed:
        assert 'data-agent="panel"' in html
        assert 'data-ws-path="/voiceconv/softphone/stream/"' in html


async def test_the_caller_watches_the_call_on_the_monitors_feed_and_nobody_else_gains(
    softphone_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    """The softphone's live transcript is the live monitor's feed of its call: the user who
    placed the call may watch that call's feed without ``view_call``, never control it, never
    watch another call or the list; another softphone user may not watch this call."""
    await Agent.objects.acreate(name="Feed", slug="feed")
    caller = await sync_to_async(kit.make_staff)("placer", view_calls=False)
    other = await sync_to_async(kit.make_staff)("other-placer", view_calls=False)
    cookie = await sync_to_async(kit.session_cookie)(caller)
    origin = softphone_server.http_url
    ws = await open_softphone(softphone_server, cookie, origin)
    stream_sid = "MZ" + "5" * 32
    await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    await ws.send(start_message(stream_sid, agent="feed"))
    hello = json.loads(await ws.recv())
    assert hello["event"] == "call"
    call_sid = hello["call"]["callSid"]
    feed_path = hello["call"]["feedPath"]
    assert feed_path == f"/voiceconv/live/{call_sid}/"
    assert hello["call"]["reviewUrl"] == ""  # no view_call: no link to a page it cannot open
    await standin.wait_for_session(timeout=10)

    feed = await connect(softphone_server.ws_url + feed_path,
                         additional_headers=[("Cookie", cookie), ("Origin", origin)],
                         open_timeout=10)
    snapshot = json.loads(await feed.recv())
    assert snapshot["event"] == "snapshot" and snapshot["can_control"] is False
    assert snapshot["call"]["call_sid"] == call_sid

    # A key press on the call is on the feed, as the monitor shows it.
    await ws.send(json.dumps({"event": "dtmf", "sequenceNumber": "2", "streamSid": stream_sid,
                              "dtmf": {"track": "inbound_track", "digit": "7"}}))
    turn = await _next_event(feed, "turn", role="dtmf")
    assert turn["text"] == "7" and turn["offset_ms"] is not None
    # Watching is not controlling.
    await feed.send(json.dumps({"id": 1, "action": "hang_up", "args": {}}))
    answer = await _next_event(feed, "control_result")
    assert answer["ok"] is False and "permission" in answer["detail"]

    # Nobody else gains anything: not another softphone user, not the list, not a Twilio call.
    other_cookie = await sync_to_async(kit.session_cookie)(other)
    for who, path in [(other_cookie, feed_path), (cookie, "/voiceconv/live/"),
                      (cookie, "/voiceconv/live/CA" + "6" * 32 + "/")]:
        with pytest.raises(InvalidStatus) as refused:
            sneak = await connect(softphone_server.ws_url + path,
                                  additional_headers=[("Cookie", who), ("Origin", origin)],
                                  open_timeout=10)
            await sneak.close()
        assert refused.value.response.status_code == 403, path

    # The caller hangs up: the feed brings the call's end.
    await ws.close()
    ended = await _next_event(feed, "ended")
    assert ended["call"]["call_sid"] == call_sid and ended["call"]["ended_at"]
    await feed.close()


async def _next_event(feed: Any, kind: str, timeout: float = 15.0,
                      **fields: Any) -> dict[str, Any]:
    """The feed's next ``kind`` message (with these ``fields``)."""
    async with asyncio.timeout(timeout):
        while True:
            message = json.loads(await feed.recv())
            if message.get("event") == kind and all(
                message.get(k) == v for k, v in fields.items()
            ):
                return message  # type: ignore[no-any-return]
