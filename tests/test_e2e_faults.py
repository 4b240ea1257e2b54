"""OpenAI faults injected through the stand-in, end to end: refuse, drop, error, stall."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator

import pytest

from tests.conftest import ROOT, server_env
from tests.e2e import enter_call, eventually, play_until_closed, wait_for_call
from voiceconv.testing import RealtimeStandIn, ScriptedResponse, silence, speech_like
from voiceconv.testing.server import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def fault_server(
    django_db_setup: None, django_db_blocker: pytest.FixtureRequest, standin_port: int
) -> Iterator[ServerProcess]:
    """A server with short timeouts, so stalls are detected quickly."""
    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        env = server_env(standin_port, CONNECT_TIMEOUT=2.0, GREETING="")
    with ServerProcess(env=env, cwd=ROOT) as server:
        yield server
        if os.environ.get("SHOW_SERVER_LOG"):
            print(server.log_text())


@pytest.mark.parametrize("status", [403, 429, 500])
async def test_openai_refusing_at_start_apologises_and_records_the_reason(
    fault_server: ServerProcess, standin: RealtimeStandIn, status: int
) -> None:
    standin.refuse_status = status
    client = await enter_call(fault_server)
    await client.send_silence(100)
    await client.wait_for_media(8000, timeout=10)
    await play_until_closed(client)  # call time passes: the apology plays to its end
    assert client.received_bytes > 8000  # the bundled spoken apology was played
    assert client.clears or client.received_media
    call = await wait_for_call(client.call_sid, ended=True)
    assert call.end_reason == "openai_error"
    assert str(status) in call.error


async def test_openai_unreachable_at_start(
    fault_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    await standin.stop()  # nothing listens on the OpenAI port
    client = await enter_call(fault_server)
    await client.wait_for_media(8000, timeout=10)
    await play_until_closed(client)
    call = await wait_for_call(client.call_sid, ended=True)
    assert call.end_reason == "openai_error"
    assert "connect failed" in call.error


async def test_openai_stalling_at_start_ends_the_call(
    fault_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    standin.stall_new_sessions = True  # connected, but session.updated never comes
    client = await enter_call(fault_server)
    await client.send_silence(100)
    await client.wait_for_media(8000, timeout=10)
    await play_until_closed(client)
    call = await wait_for_call(client.call_sid, ended=True)
    assert call.end_reason == "openai_error"


async def test_error_events_are_logged_and_the_call_goes_on(
    fault_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    client = await enter_call(fault_server)
    session = await standin.wait_for_session(0, timeout=5)
    await session.expect_event("session.update")
    await session.send_error("server_error", "The server had an error")
    await session.send_error("conversation_already_has_active_response", "busy")
    await client.send_silence(200)
    n = len(session.appends)
    await client.send_silence(200)
    await eventually(lambda: len(session.appends) >= n + 10)
    assert not client.closed.is_set()
    await client.hang_up()
    assert "server_error" in fault_server.log_text()


async def test_socket_drop_mid_call_reconnects_and_restores_the_conversation(
    fault_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    standin.responses.append(ScriptedResponse(text="Your order ships tomorrow."))
    standin.caller_transcripts.append("When does my order ship?")
    client = await enter_call(fault_server)
    first = await standin.wait_for_session(0, timeout=5)
    await first.expect_event("session.update")
    await client.send_silence(200)
    await client.send_audio(speech_like(600))
    await client.send_audio(silence(800))
    await eventually(lambda: any(e["type"] == "response.done" for e in first.sent), 30)
    await client.wait_for_playback(timeout=30)  # the answer plays to the end

    await first.close(code=1011)
    dropped = time.monotonic()
    for _ in range(40):  # the caller keeps talking through the outage, in real time
        await client.send_silence(20)
        await asyncio.sleep(0.02)
        if len(standin.sessions) > 1 and standin.sessions[1].appends:
            break
    second = await standin.wait_for_session(1, timeout=5)
    await eventually(lambda: len(second.appends) > 0)
    gap = second.appends[0][0] - dropped
    print(f"reconnect gap: {gap * 1000:.0f} ms from drop to caller audio in the new session")

    update = await second.expect_event("session.update")
    assert update["session"]["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    seeded = [
        e["item"] for e in second.received if e["type"] == "conversation.item.create"
    ]
    texts = [(i["role"], i["content"][0].get("text")) for i in seeded]
    assert ("user", "When does my order ship?") in texts
    assert ("assistant", "Your order ships tomorrow.") in texts
    assert second.protocol_violations == []
    # No second greeting, and the call is still up.
    assert not [r for r in second.response_requests if r.get("instructions")]
    assert not client.closed.is_set()
    # Every frame sent after the drop reached the new session, in order, once.
    sent_after = [b for t, b in client.sent_frames if t >= dropped]
    assert [b for _, b in second.appends][-len(sent_after):] == sent_after
    await client.hang_up()
    call = await wait_for_call(client.call_sid, ended=True)
    assert call.end_reason == "caller_hung_up"


async def test_session_expiry_opens_a_new_session(
    fault_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    client = await enter_call(fault_server)
    first = await standin.wait_for_session(0, timeout=5)
    await first.expect_event("session.update")
    expired = "Your session hit the maximum duration of 60 minutes."
    await first.send_error("session_expired", expired)
    await first.close(code=1001, reason=expired)
    await client.send_silence(300)
    second = await standin.wait_for_session(1, timeout=5)
    await second.expect_event("session.update")
    await client.send_silence(200)
    await eventually(lambda: len(second.appends) > 0)
    assert not client.closed.is_set()
    await client.hang_up()
    log = fault_server.log_text()
    assert "session_expired" in log
    _ = json


async def test_calls_beyond_the_process_limit_get_a_polite_busy_answer(
    django_db_blocker: pytest.FixtureRequest, standin: RealtimeStandIn, standin_port: int
) -> None:
    import urllib.request

    from twilio.request_validator import RequestValidator

    from tests.conftest import AUTH_TOKEN, PUBLIC_URL

    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        env = server_env(standin_port, MAX_CONCURRENT_CALLS=1, GREETING="")
    with ServerProcess(env=env, cwd=ROOT) as server:
        first = await enter_call(server)

        def live_calls() -> int:
            import json
            import urllib.error

            try:
                with urllib.request.urlopen(server.http_url + "/twilio/health/", timeout=5) as r:
                    return int(json.loads(r.read())["calls"])
            except urllib.error.HTTPError as unhealthy:  # 503 still says how many calls
                return int(json.loads(unhealthy.read())["calls"])

        # The server holds the first call (a session on the stand-in could be another
        # test's call reconnecting, so ask the server itself).
        deadline = asyncio.get_running_loop().time() + 30
        while await asyncio.to_thread(live_calls) < 1:
            assert asyncio.get_running_loop().time() < deadline, "the first call never went live"
            await asyncio.sleep(0.05)
        form = {"CallSid": "CA" + "e" * 32, "From": "+14155550111", "To": "+14155550100"}
        url = PUBLIC_URL + "/twilio/incoming/"
        signature = RequestValidator(AUTH_TOKEN).compute_signature(url, form)
        request = urllib.request.Request(
            server.http_url + "/twilio/incoming/",
            data="&".join(f"{k}={v.replace('+', '%2B')}" for k, v in form.items()).encode(),
            headers={"X-Twilio-Signature": signature,
                     "Content-Type": "application/x-www-form-urlencoded"},
        )
        with await asyncio.to_thread(urllib.request.urlopen, request, timeout=5) as response:
            twiml = response.read().decode()
        assert "<Say>All our lines are busy" in twiml and "<Hangup" in twiml
        assert "<Connect>" not in twiml
        await first.hang_up()
        await asyncio.sleep(0.3)
        # Once the first call has ended, the next one is answered again.
        second = await enter_call(server)
        assert second.custom_parameters["call_token"]
        await second.hang_up()
