"""The live monitor's socket, in process (Channels' WebsocketCommunicator through the real
routing: AllowedHostsOriginValidator, AuthMiddlewareStack, the consumer): who may watch,
who may control, and what it sends."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.test import Client, override_settings
from django.utils import timezone

from voiceconv import live
from voiceconv.consumers import MediaStreamConsumer
from voiceconv.models import Agent, Call, ToolDefinition, TranscriptEntry
from voiceconv.routing import websocket_urlpatterns

pytestmark = pytest.mark.django_db(transaction=True)

SID = "CA" + "7" * 32
APP = URLRouter(websocket_urlpatterns)


def make_live_call() -> Call:
    now = timezone.now()
    agent = Agent.objects.create(name="Front desk", slug="front-desk")
    call = Call.objects.create(
        twilio_call_sid=SID, twilio_stream_sid="MZ" + "7" * 32, agent=agent,
        from_number="+14155550123", to_number="+14155550100", status="in-progress",
        stream_started_at=now - dt.timedelta(seconds=5), heartbeat_at=now,
        live_process="host-a:1",
    )
    TranscriptEntry.objects.create(call=call, sequence=1, role="assistant", text="Hello!")
    return call


def user(name: str, *, staff: bool = True, perms: tuple[str, ...] = ()) -> User:
    u = User.objects.create_user(name, password="pw", is_staff=staff)
    for codename in perms:
        u.user_permissions.add(Permission.objects.get(codename=codename,
                                                      content_type__app_label="voiceconv"))
    return u


def cookie_for(u: User | None) -> list[tuple[bytes, bytes]]:
    headers = [(b"origin", b"http://testserver"), (b"host", b"testserver")]
    if u is not None:
        client = Client()
        client.force_login(u)
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}="
                        f"{client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()))
    return headers


async def open_socket(u: User | None, path: str = f"/voiceconv/live/{SID}/",
                      headers: list[tuple[bytes, bytes]] | None = None) -> tuple[Any, bool, Any]:
    if headers is None:
        headers = await sync_to_async(cookie_for)(u)
    communicator = WebsocketCommunicator(APP, path, headers=headers)
    connected, code = await communicator.connect(timeout=5)
    return communicator, connected, code


@pytest.mark.parametrize("who", ["anonymous", "not staff", "staff without view permission"])
async def test_the_socket_refuses_strangers_and_users_without_the_permission(who: str) -> None:
    await sync_to_async(make_live_call)()
    u = None
    if who == "not staff":
        u = await sync_to_async(user)("bob", staff=False, perms=("view_call", "control_call"))
    elif who == "staff without view permission":
        u = await sync_to_async(user)("carol", perms=("control_call",))
    communicator, connected, code = await open_socket(u)
    assert not connected
    assert code == 4403
    await communicator.disconnect()


async def test_the_socket_refuses_a_foreign_origin() -> None:
    await sync_to_async(make_live_call)()
    u = await sync_to_async(user)("dave", perms=("view_call", "control_call"))
    headers = await sync_to_async(cookie_for)(u)
    headers = [(k, b"https://evil.example" if k == b"origin" else v) for k, v in headers]
    with override_settings(ALLOWED_HOSTS=["testserver"]):
        communicator, connected, _ = await open_socket(u, headers=headers)
    assert not connected
    await communicator.disconnect()


async def test_a_watcher_gets_the_call_so_far_then_its_feed() -> None:
    await sync_to_async(make_live_call)()
    u = await sync_to_async(user)("erin", perms=("view_call",))
    communicator, connected, _ = await open_socket(u)
    assert connected
    snapshot = await communicator.receive_json_from(timeout=5)
    assert snapshot["event"] == "snapshot"
    assert snapshot["can_control"] is False
    assert snapshot["call"]["call_sid"] == SID and snapshot["call"]["live"] is True
    assert [t["text"] for t in snapshot["turns"]] == ["Hello!"]
    await live.publish(SID, {"event": "turn", "sequence": 2, "role": "caller", "text": "Hi"})
    event = await communicator.receive_json_from(timeout=5)
    assert event == {"event": "turn", "sequence": 2, "role": "caller", "text": "Hi"}
    await communicator.disconnect()


async def test_control_through_the_socket_is_refused_without_the_control_permission() -> None:
    await sync_to_async(make_live_call)()
    u = await sync_to_async(user)("frank", perms=("view_call",))
    communicator, connected, _ = await open_socket(u)
    assert connected
    await communicator.receive_json_from(timeout=5)
    # Someone listening as the call's holder would see any request that got through.
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    holder = await layer.new_channel()
    await layer.group_add(MediaStreamConsumer.group_name(SID), holder)
    await communicator.send_json_to({"id": 1, "action": "hang_up", "args": {}})
    answer = await communicator.receive_json_from(timeout=5)
    assert answer["event"] == "control_result" and answer["ok"] is False
    assert "permission" in answer["detail"]
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(holder), 0.5)
    await communicator.disconnect()


async def test_control_through_the_socket_goes_to_the_call_with_the_users_name() -> None:
    call = await sync_to_async(make_live_call)()
    u = await sync_to_async(user)("grace", perms=("view_call", "control_call"))
    definition, _ = await ToolDefinition.objects.aget_or_create(name="transfer_call")
    definition.parameters_override = {
        "type": "object", "required": ["target"],
        "properties": {"target": {"type": "string", "enum": ["+14155550199"]}}}
    await definition.asave()
    await sync_to_async(call.agent.tools.add)(definition)
    from voiceconv.models import AgentTelephony

    await AgentTelephony.objects.acreate(agent=call.agent, transfer_targets="+1415555*")
    communicator, connected, _ = await open_socket(u)
    assert connected
    assert (await communicator.receive_json_from(timeout=5))["can_control"] is True
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    holder = await layer.new_channel()
    await layer.group_add(MediaStreamConsumer.group_name(SID), holder)

    # A number the agent does not allow never leaves the socket.
    await communicator.send_json_to({"id": 1, "action": "transfer",
                                     "args": {"target": "+19005550000"}})
    answer = await communicator.receive_json_from(timeout=5)
    assert answer["ok"] is False and "does not allow" in answer["detail"]

    await communicator.send_json_to({"id": 2, "action": "transfer",
                                     "args": {"target": "+14155550199"}})
    request = await asyncio.wait_for(layer.receive(holder), 5)
    assert request["action"] == "transfer" and request["by"] == "grace"
    assert request["args"] == {"target": "+14155550199"}
    await layer.send(request["reply_to"], {"type": "voiceconv.control.ack", "id": request["id"],
                                           "ok": True, "detail": "", "process": "host-a:1"})
    answer = await communicator.receive_json_from(timeout=5)
    assert answer == {"event": "control_result", "id": 2, "ok": True, "detail": "Done."}
    await communicator.disconnect()


async def test_the_list_socket_lists_live_calls() -> None:
    await sync_to_async(make_live_call)()
    u = await sync_to_async(user)("heidi", perms=("view_call",))
    communicator, connected, _ = await open_socket(u, "/voiceconv/live/")
    assert connected
    snapshot = await communicator.receive_json_from(timeout=5)
    assert [c["call_sid"] for c in snapshot["calls"]] == [SID]
    await live.publish(SID, {"event": "ended", "call": {"call_sid": SID}}, to_list=True)
    assert (await communicator.receive_json_from(timeout=5))["event"] == "ended"
    await communicator.disconnect()


def test_the_live_pages_need_the_view_permission(client: Client) -> None:
    make_live_call()
    client.force_login(user("ivan"))
    assert client.get("/admin/voiceconv/call/live/").status_code == 403
    client.force_login(user("judy", perms=("view_call",)))
    page = client.get("/admin/voiceconv/call/live/")
    assert page.status_code == 200 and SID in page.content.decode()
    call = Call.objects.get(twilio_call_sid=SID)
    change = client.get(f"/admin/voiceconv/call/{call.pk}/change/").content.decode()
    assert 'id="vc-live"' in change and f"/voiceconv/live/{SID}/" in change
    assert 'data-action="hang_up"' not in change  # no buttons without control_call
    client.force_login(user("ken", perms=("view_call", "control_call")))
    change = client.get(f"/admin/voiceconv/call/{call.pk}/change/").content.decode()
    assert 'data-action="hang_up"' in change
    Call.objects.filter(pk=call.pk).update(ended_at=timezone.now())
    change = client.get(f"/admin/voiceconv/call/{call.pk}/change/").content.decode()
    assert 'id="vc-live"' not in change and 'id="conversation"' in change


async def test_whoever_placed_a_browser_call_may_watch_that_call_and_nothing_else() -> None:
    """The softphone's transcript is this feed: its caller watches it without view_call."""
    placer = await sync_to_async(user)("lena", perms=("place_browser_call",))
    other = await sync_to_async(user)("mona", perms=("place_browser_call",))
    former = await sync_to_async(user)("nils")  # placed it, lost the permission since

    def browser_call(by: User, sid: str = SID) -> None:
        Call.objects.filter(twilio_call_sid=sid).update(
            direction=Call.Direction.BROWSER, custom_parameters={"user": str(by.pk)})

    await sync_to_async(make_live_call)()
    await sync_to_async(browser_call)(placer)
    communicator, connected, _ = await open_socket(placer)
    assert connected
    snapshot = await communicator.receive_json_from(timeout=5)
    assert snapshot["call"]["call_sid"] == SID and snapshot["can_control"] is False
    assert [t["text"] for t in snapshot["turns"]] == ["Hello!"]
    await live.publish(SID, {"event": "turn", "sequence": 2, "role": "tool", "text": "x() → 1"})
    assert (await communicator.receive_json_from(timeout=5))["role"] == "tool"
    await communicator.send_json_to({"id": 1, "action": "hang_up", "args": {}})
    answer = await communicator.receive_json_from(timeout=5)
    assert answer["ok"] is False and "permission" in answer["detail"]
    await communicator.disconnect()

    for who, path in [(other, f"/voiceconv/live/{SID}/"), (placer, "/voiceconv/live/"),
                      (former, f"/voiceconv/live/{SID}/")]:
        if who is former:
            await sync_to_async(browser_call)(former)
        communicator, connected, code = await open_socket(who, path)
        assert not connected and code == 4403, (who.username, path)
        await communicator.disconnect()

    # The same "user" parameter on a phone call gives nothing.
    await sync_to_async(browser_call)(placer)
    await Call.objects.filter(twilio_call_sid=SID).aupdate(direction=Call.Direction.INBOUND)
    communicator, connected, code = await open_socket(placer)
    assert not connected and code == 4403
    await communicator.disconnect()
