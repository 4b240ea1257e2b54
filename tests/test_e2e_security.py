"""Who gets in, over real sockets: the example project under daphne, the Realtime stand-in as
OpenAI, the Twilio stream client as Twilio (or as a stranger pretending to be it)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core import signing
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import AUTH_TOKEN, OPENAI_KEY, PUBLIC_URL
from tests.e2e import eventually, track, wait_for_call
from voiceconv import security
from voiceconv.testing import RealtimeStandIn, TwilioStreamClient
from voiceconv.testing.server import ServerProcess
from voiceconv.testing.twilio_client import new_sid

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("hang_up_leftovers"),
]




STREAM_URL = "wss://voice.example.test/twilio/stream/"
CALLER = "+14155550123"
NUMBER = "+14155550100"


async def no_session_opened(standin: RealtimeStandIn, wait: float = 0.5) -> None:
    """Give a wrongly admitted stream the time to reach OpenAI, then check it did not."""
    await asyncio.sleep(wait)
    assert standin.sessions == []
    assert standin.handshakes == []


def stranger(server: ServerProcess, **kwargs: Any) -> TwilioStreamClient:
    """A stream client that did not go through the webhook."""
    kwargs.setdefault("auth_token", AUTH_TOKEN)
    kwargs.setdefault("signature_url", STREAM_URL)
    return track(TwilioStreamClient(server.ws_url + "/twilio/stream/", **kwargs))


async def webhook(server: ServerProcess, **kwargs: Any) -> TwilioStreamClient:
    return track(
        await TwilioStreamClient.from_webhook(
            server.http_url,
            auth_token=AUTH_TOKEN,
            public_url=PUBLIC_URL,
            form={"From": CALLER, "To": NUMBER},
            **kwargs,
        )
    )


def old_token(call_sid: str, age: int) -> str:
    """A token the server minted ``age`` seconds ago (same SECRET_KEY as this process)."""

    class PastSigner(signing.TimestampSigner):
        def timestamp(self) -> str:
            return signing.b62_encode(int(time.time()) - age)

    return PastSigner(salt=security.TOKEN_SALT).sign_object({"c": call_sid}, compress=False)


# ------------------------------------------------------------------- handshake signature


@pytest.mark.parametrize(
    ("auth_token", "signature_url"),
    [
        ("not-the-auth-token", STREAM_URL),
        (AUTH_TOKEN, "https://voice.example.test/twilio/stream/"),  # naive https rebuild
        (AUTH_TOKEN, "wss://evil.example.test/twilio/stream/"),
        (AUTH_TOKEN, "wss://voice.example.test/twilio/other/"),
    ],
    ids=["other token", "https url", "other host", "other path"],
)
async def test_forged_handshake_signature_is_refused_at_the_upgrade(
    e2e_server: ServerProcess,
    standin: RealtimeStandIn,
    server_log: Any,
    auth_token: str,
    signature_url: str,
) -> None:
    # A valid token does not help a stream whose handshake signature is wrong.
    call_sid = new_sid("CA")
    client = stranger(
        e2e_server,
        call_sid=call_sid,
        auth_token=auth_token,
        signature_url=signature_url,
        custom_parameters={"call_token": security.make_stream_token(call_sid)},
    )
    with pytest.raises(InvalidStatus) as exc:
        await client.start_call()
    assert exc.value.response.status_code == 403
    await no_session_opened(standin)
    log = server_log()
    assert "stream handshake refused: invalid x-twilio-signature" in log
    assert "Traceback" not in log


async def test_valid_handshake_signature_is_accepted(
    e2e_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    client = await webhook(e2e_server)
    assert client.signature_url == STREAM_URL
    await client.start_call()
    session = await standin.wait_for_session(0, timeout=10)
    await session.expect_event("session.update", timeout=5)
    await client.hang_up()
    await wait_for_call(client.call_sid, ended=True)
    assert len(standin.sessions) == 1


# ---------------------------------------------------------------------------- stream token


@pytest.mark.parametrize(
    "case", ["missing", "empty", "forged", "another call", "expired", "other salt"]
)
async def test_stream_without_a_valid_token_is_closed_4403_before_openai(
    e2e_server: ServerProcess, standin: RealtimeStandIn, server_log: Any, case: str
) -> None:
    from voiceconv.models import Call

    call_sid = new_sid("CA")
    good = security.make_stream_token(call_sid)
    token = {
        "missing": None,
        "empty": "",
        "forged": good[:-2] + ("AA" if not good.endswith("AA") else "BB"),
        "another call": security.make_stream_token(new_sid("CA")),
        "expired": old_token(call_sid, 3600),
        "other salt": signing.dumps({"c": call_sid}, salt="voiceconv.something-else"),
    }[case]
    params = {} if token is None else {"call_token": token}
    client = stranger(e2e_server, call_sid=call_sid, custom_parameters=params)
    await client.start_call()
    with contextlib.suppress(ConnectionClosed):  # the server may have closed already
        await client.send_silence(200)
    assert await client.wait_closed(timeout=5) == 4403
    await no_session_opened(standin)
    assert not await Call.objects.filter(twilio_call_sid=call_sid).aexists()
    reason = {
        "missing": "missing stream token",
        "empty": "missing stream token",
        "forged": "forged stream token",
        "another call": "stream token for another call",
        "expired": "expired stream token",
        "other salt": "forged stream token",
    }[case]
    log = server_log()
    assert f"call {call_sid}: stream refused: {reason}" in log
    if token:
        assert token not in log
    assert "Traceback" not in log


async def test_token_from_a_real_webhook_for_another_call_is_refused(
    e2e_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    answered = await webhook(e2e_server)  # a genuine token, for answered.call_sid
    client = stranger(e2e_server, custom_parameters=dict(answered.custom_parameters))
    assert client.call_sid != answered.call_sid
    await client.start_call()
    assert await client.wait_closed(timeout=5) == 4403
    await no_session_opened(standin)


# ------------------------------------------------------------------------------ replays


async def test_replayed_token_never_opens_a_second_openai_session(
    e2e_server: ServerProcess, standin: RealtimeStandIn, server_log: Any
) -> None:
    first = await webhook(e2e_server)
    await first.start_call()
    session = await standin.wait_for_session(0, timeout=10)
    await session.expect_event("session.update", timeout=5)
    call = await wait_for_call(first.call_sid)
    assert call.twilio_stream_sid == first.stream_sid

    def replay() -> TwilioStreamClient:
        return stranger(
            e2e_server,
            call_sid=first.call_sid,
            account_sid=first.account_sid,
            custom_parameters=dict(first.custom_parameters),
        )

    # A second stream while the first is live is refused, and the first goes on untouched.
    second = replay()
    await second.start_call()
    with contextlib.suppress(ConnectionClosed):
        await second.send_silence(100)
    assert await second.wait_closed(timeout=5) == 4409
    await first.send_silence(400)
    await eventually(lambda: len(session.appends) >= len(first.sent_frames))
    assert [b for _, b in session.appends] == [b for _, b in first.sent_frames]
    assert not first.closed.is_set()
    await asyncio.sleep(0.3)
    assert len(standin.sessions) == 1

    await first.hang_up()
    call = await wait_for_call(first.call_sid, ended=True)
    assert call.end_reason == "caller_hung_up"

    # And once the first has ended, the (still unexpired) token opens nothing either.
    third = replay()
    await third.start_call()
    assert await third.wait_closed(timeout=5) == 4409
    await asyncio.sleep(0.3)
    assert len(standin.sessions) == 1
    call = await wait_for_call(first.call_sid, ended=True)
    assert call.twilio_stream_sid == first.stream_sid
    assert call.end_reason == "caller_hung_up"
    log = server_log()
    refused = f" voiceconv.consumers call {first.call_sid}: stream refused: call already has stream"
    assert log.count(refused) == 2
    assert "Traceback" not in log


async def test_concurrent_replays_open_one_session(
    e2e_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    answered = await webhook(e2e_server)
    clients = [
        stranger(
            e2e_server,
            call_sid=answered.call_sid,
            custom_parameters=dict(answered.custom_parameters),
        )
        for _ in range(4)
    ]
    await asyncio.gather(*(c.start_call() for c in clients))
    await asyncio.sleep(1.0)
    refused = [c for c in clients if c.closed.is_set()]
    assert [c.close_code for c in refused] == [4409] * 3
    assert len(standin.sessions) == 1
    for c in clients:
        await c.hang_up()


# --------------------------------------------------------------------- secrets stay secret


async def test_secrets_never_reach_the_logs_or_the_admin(
    e2e_server: ServerProcess, standin: RealtimeStandIn, server_log: Any
) -> None:
    client = await webhook(e2e_server)
    token = client.custom_parameters["call_token"]
    signature = client.handshake_headers()[0][1]
    await client.start_call()
    session = await standin.wait_for_session(0, timeout=10)
    await session.expect_event("response.create", timeout=5)
    await client.send_silence(1500)
    await client.send_dtmf("7")
    await client.send_raw("not json")  # bad input is logged: with no secret in it
    await client.send_silence(200)
    await client.hang_up()
    call = await wait_for_call(client.call_sid, ended=True)

    log = server_log()
    assert f"call {client.call_sid}" in log  # the log did record this call
    for secret in (AUTH_TOKEN, OPENAI_KEY, token, signature, token.rsplit(":", 1)[-1]):
        assert secret not in log
    assert "call_token" not in call.custom_parameters
    assert call.custom_parameters.get("from") == CALLER

    pages = await sync_to_async(admin_pages)(call.pk)
    for url, html in pages.items():
        assert client.call_sid in html, url
        for secret in (AUTH_TOKEN, OPENAI_KEY, token, "call_token"):
            assert secret not in html, (url, secret)


def admin_pages(pk: int) -> dict[str, str]:
    from django.contrib.auth import get_user_model
    from django.test import Client

    user = get_user_model().objects.create_superuser("admin", "a@example.test", "pw")
    browser = Client()
    browser.force_login(user)
    pages = {}
    for url in (
        "/admin/voiceconv/call/",
        f"/admin/voiceconv/call/{pk}/change/",
        "/admin/voiceconv/call/?q=CA",
    ):
        response = browser.get(url)
        assert response.status_code == 200, url
        pages[url] = response.content.decode()
    return pages

