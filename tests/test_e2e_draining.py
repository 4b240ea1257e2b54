"""Draining on SIGTERM, end to end: a real server process (daphne and uvicorn) with the
default ``DRAIN_SECONDS`` and the example project's ``DrainingMiddleware``. After SIGTERM,
health answers 503 and new calls get the busy message, while the call in progress goes on
until the caller hangs up; then the process exits by itself. A drain whose time is up ends the
calls still live (reason ``shutdown``) with their records written."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import urllib.error
import urllib.parse
import urllib.request

import pytest
from twilio.request_validator import RequestValidator

from tests.conftest import AUTH_TOKEN, PUBLIC_URL, ROOT, server_env
from tests.e2e import enter_call, eventually, wait_for_call
from voiceconv.testing import RealtimeStandIn, ScriptedResponse, silence, speech_like
from voiceconv.testing.server import ServerProcess

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("hang_up_leftovers"),
]


def get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def post_incoming(server: ServerProcess, call_sid: str) -> str:
    form = {"CallSid": call_sid, "From": "+14155550123", "To": "+14155550100"}
    signature = RequestValidator(AUTH_TOKEN).compute_signature(
        PUBLIC_URL + "/twilio/incoming/", form)
    request = urllib.request.Request(
        server.http_url + "/twilio/incoming/", data=urllib.parse.urlencode(form).encode(),
        headers={"X-Twilio-Signature": signature}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()


async def sigterm_until_draining(server: ServerProcess) -> None:
    """SIGTERM the server and wait until its health says it drains."""
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)

    async def draining() -> bool:
        status, body = await asyncio.to_thread(get, server.http_url + "/twilio/health/")
        return status == 503 and body["status"] == "draining"

    for _ in range(100):
        if await draining():
            break
        await asyncio.sleep(0.1)
    assert await draining()


@pytest.mark.parametrize("server_kind", ["daphne", "uvicorn"])
async def test_sigterm_drains_new_calls_away_and_lets_the_live_call_finish(
    django_db_blocker: object, standin_port: int, standin: RealtimeStandIn, server_kind: str
) -> None:
    env = server_env(standin_port)  # the default DRAIN_SECONDS
    standin.responses.append(ScriptedResponse(text="Hello, how can I help?"))
    with ServerProcess(env=env, cwd=ROOT, server=server_kind) as server:  # type: ignore[arg-type]
        status, body = await asyncio.to_thread(get, server.http_url + "/twilio/health/")
        assert status == 200 and body["status"] == "ok", body

        client = await enter_call(server)
        session = await standin.wait_for_session(0, timeout=15)
        await session.expect_event("session.update", timeout=10)
        await client.send_silence(500)
        await eventually(lambda: any(e["type"] == "response.done" for e in session.sent), 10)

        await sigterm_until_draining(server)
        assert server.process is not None
        twiml = await asyncio.to_thread(post_incoming, server, "CA" + "d" * 32)
        assert "<Hangup" in twiml and "<Stream" not in twiml

        # The live call goes on: the caller is heard, and the agent still answers.
        standin.responses.append(ScriptedResponse(text="Still here for you."))
        standin.caller_transcripts.append("Are you still there?")
        await client.send_audio(speech_like(800) + silence(900))
        await eventually(lambda: sum(e["type"] == "response.done" for e in session.sent) >= 2, 15)
        await client.send_silence(3000)
        assert server.process.poll() is None  # still serving
        await client.hang_up()
        await asyncio.to_thread(server.process.wait, 30)  # exits once the call is over
        log = server.log_text()

    call = await wait_for_call(client.call_sid, ended=True)
    assert call.end_reason == "caller_hung_up"
    texts = await asyncio.to_thread(
        lambda: list(call.transcript_entries.values_list("text", flat=True)))
    assert "Still here for you." in texts
    assert "draining: new calls are refused" in log and "drained: stopping" in log


async def test_a_drain_whose_time_is_up_ends_the_calls_still_live(
    django_db_blocker: object, standin_port: int, standin: RealtimeStandIn
) -> None:
    env = server_env(standin_port, DRAIN_SECONDS=2)
    standin.responses.append(ScriptedResponse(text="Welcome, one moment."))
    with ServerProcess(env=env, cwd=ROOT) as server:
        client = await enter_call(server)
        session = await standin.wait_for_session(0, timeout=15)
        await session.expect_event("session.update", timeout=10)
        await client.send_silence(500)
        await eventually(lambda: any(e["type"] == "response.done" for e in session.sent), 10)
        await client.send_silence(1000)  # the greeting is heard
        await sigterm_until_draining(server)
        assert server.process is not None
        # The caller stays on the line; the drain's 2 s run out and the server stops.
        with contextlib.suppress(Exception):
            while server.process.poll() is None and not client.closed.is_set():
                await client.send_silence(100)
        await asyncio.to_thread(server.process.wait, 30)
        log = server.log_text()

    call = await wait_for_call(client.call_sid, ended=True)
    assert call.end_reason == "shutdown"
    texts = await asyncio.to_thread(
        lambda: list(call.transcript_entries.values_list("text", flat=True)))
    assert "Welcome, one moment." in texts
    assert "go on for up to 2 s" in log and "drained: stopping the server (1 call(s)" in log
