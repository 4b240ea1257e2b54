"""Draining on SIGTERM, end to end: a real server process with ``DRAIN_SECONDS`` set and the
example project's ``DrainingMiddleware``. After SIGTERM, health answers 503 and new calls get
the busy message, while the call in progress goes on until the caller hangs up; then the
process exits by itself."""

from __future__ import annotations

import asyncio
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


async def test_sigterm_drains_new_calls_away_and_lets_the_live_call_finish(
    django_db_blocker: object, standin_port: int, standin: RealtimeStandIn
) -> None:
    env = server_env(standin_port, DRAIN_SECONDS=60)
    standin.responses.append(ScriptedResponse(text="Hello, how can I help?"))
    with ServerProcess(env=env, cwd=ROOT) as server:
        status, body = await asyncio.to_thread(get, server.http_url + "/twilio/health/")
        assert status == 200 and body["status"] == "ok", body

        client = await enter_call(server)
        session = await standin.wait_for_session(0, timeout=15)
        await session.expect_event("session.update", timeout=10)
        await client.send_silence(500)
        await eventually(lambda: any(e["type"] == "response.done" for e in session.sent), 10)

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
