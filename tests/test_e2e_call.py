"""End to end: the example project under daphne, the real openai SDK, the Realtime stand-in
as OpenAI and the Twilio stream client as Twilio, all over real sockets on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async

from tests.conftest import AUTH_TOKEN
from tests.e2e import CALLER, enter_call, eventually, play_until_closed, wait_for_call
from voiceconv.testing import (
    RealtimeStandIn,
    ScriptedResponse,
    TwilioStreamClient,
    silence,
    speech_like,
)
from voiceconv.testing.server import ServerProcess

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("hang_up_leftovers"),
]



async def test_a_call_end_to_end(
    e2e_server: ServerProcess, standin: RealtimeStandIn, callback_log: Path
) -> None:
    standin.responses.append(ScriptedResponse(text="Hello, thanks for calling. How can I help?"))
    standin.responses.append(ScriptedResponse(text="Sure, I can help with that order."))
    standin.caller_transcripts.append("I have a question about my order")
    client = await enter_call(e2e_server)
    assert client.custom_parameters["call_token"]
    assert client.custom_parameters["from"] == CALLER

    # Caller audio from the first frame on, while the OpenAI session is still opening.
    await client.send_silence(100)
    session = await standin.wait_for_session(0, timeout=10)
    update = await session.expect_event("session.update", timeout=5)
    cfg = update["session"]
    assert cfg["type"] == "realtime"
    assert cfg["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert cfg["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    assert "temperature" not in cfg
    greeting = await session.expect_event("response.create", timeout=5)
    assert "Greet the caller" in greeting["response"]["instructions"]

    # The greeting reaches the caller byte for byte, in order.
    await client.send_silence(200)
    await eventually(lambda: any(e["type"] == "response.done" for e in session.sent))
    greeting_audio = sum(len(base64.b64decode(d)) for _, _, d in session.sent_deltas)
    await client.wait_for_media(greeting_audio, timeout=5)

    # The caller listens to the whole greeting, then speaks, then is silent.
    await client.send_silence(greeting_audio // 8 + 200)
    await client.send_audio(speech_like(800))
    await client.send_audio(silence(900))
    await eventually(lambda: sum(e["type"] == "response.done" for e in session.sent) >= 2)
    await client.send_silence(3000)

    # Every caller frame reached OpenAI exactly once, in order, the same base64 string.
    await eventually(lambda: len(session.appends) >= len(client.sent_frames))
    assert [b for _, b in session.appends] == [b for _, b in client.sent_frames]
    # Every assistant delta reached the caller byte-identical, in order.
    assert [d for _, _, d in session.sent_deltas] == [p for _, p in client.received_media]
    assert session.protocol_violations == []
    assert client.violations == []

    await client.hang_up()
    # A hang-up closes the OpenAI socket within a second.
    t0 = time.monotonic()
    await asyncio.wait_for(session.closed.wait(), 1.0)
    assert time.monotonic() - t0 < 1.0

    call = await wait_for_call(client.call_sid, ended=True)
    assert call.status == "completed"
    assert call.end_reason == "caller_hung_up"
    entries = await sync_to_async(list)(call.transcript_entries.order_by("sequence"))
    roles = [(e.role, e.text) for e in entries]
    assert ("assistant", "Hello, thanks for calling. How can I help?") in roles
    assert ("caller", "I have a question about my order") in roles
    assert ("assistant", "Sure, I can help with that order.") in roles
    answer = next(e for e in entries if e.text.startswith("Sure"))
    assert answer.latency_ms is not None and answer.latency_ms >= 0
    assert not answer.interrupted
    assert call.output_tokens > 0

    # The transcript callbacks (one sync, one async) fired with the right text.
    lines = [json.loads(x) for x in callback_log.read_text().splitlines()]
    mine = [(x["kind"], x["text"]) for x in lines if x["call_sid"] == client.call_sid]
    assert mine == [
        ("assistant", "Hello, thanks for calling. How can I help?"),
        ("user", "I have a question about my order"),
        ("assistant", "Sure, I can help with that order."),
    ]


async def test_barge_in_clears_and_truncates_at_what_the_caller_heard(
    e2e_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    standin.responses.append(ScriptedResponse(text="x" * 100, audio_ms=6000))
    client = await enter_call(e2e_server, realtime=True)
    session = await standin.wait_for_session(0, timeout=10)
    await session.expect_event("response.create", timeout=5)
    await client.send_silence(1500)  # about 1.5 s of the 6 s answer played in real time
    await client.send_audio(speech_like(400))
    clear = await client.expect_event("clear", timeout=3)
    assert clear["streamSid"] == client.stream_sid
    truncate = await session.expect_event("conversation.item.truncate", timeout=3)
    heard_ms = client.clear_records[0].run_played_ms if client.clear_records else None
    assert heard_ms is not None
    # Within one 20 ms frame of what the simulated caller had actually heard.
    assert abs(truncate["audio_end_ms"] - heard_ms) <= 20, (truncate, heard_ms)
    assert session.truncates and session.truncates[-1][2] is True  # accepted by the "API"
    await client.hang_up()
    call = await wait_for_call(client.call_sid, ended=True)
    entry = await call.transcript_entries.filter(role="assistant").afirst()
    assert entry.interrupted
    assert abs(entry.heard_ms - truncate["audio_end_ms"]) <= 1


async def test_openai_refusing_the_connection_ends_the_call_gracefully(
    e2e_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    standin.refuse_status = 401
    client = await enter_call(e2e_server)
    await client.send_silence(200)
    code = await client.wait_closed(timeout=15)  # the apology plays first
    assert code is not None
    assert client.received_bytes > 8000  # the spoken apology
    call = await wait_for_call(client.call_sid, ended=True)
    assert call.end_reason == "openai_error"
    assert "401" in call.error or "connect" in call.error


async def test_unsigned_webhook_is_refused(e2e_server: ServerProcess) -> None:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        e2e_server.http_url + "/twilio/incoming/",
        data=b"CallSid=CA0&From=%2B1&To=%2B2",
        method="POST",
        headers={"X-Twilio-Signature": "forged"},
    )
    with pytest.raises(urllib.error.HTTPError) as exc:
        await asyncio.to_thread(urllib.request.urlopen, req, timeout=5)
    with exc.value:
        assert exc.value.code == 403


async def test_stream_without_token_is_closed_before_openai_is_opened(
    e2e_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    client = TwilioStreamClient(
        e2e_server.ws_url + "/twilio/stream/", auth_token=AUTH_TOKEN,
        signature_url="wss://voice.example.test/twilio/stream/",
    )
    await client.start_call()
    code = await client.wait_closed(timeout=5)
    assert code == 4403
    await asyncio.sleep(0.2)
    assert standin.sessions == []


async def test_key_presses_reach_the_model_and_the_transcript(
    e2e_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    client = await enter_call(e2e_server)
    session = await standin.wait_for_session(0, timeout=10)
    await session.expect_event("session.update")
    await eventually(lambda: any(e["type"] == "response.done" for e in session.sent))
    await client.send_silence(3000)  # the greeting plays out
    await client.send_dtmf("7")
    await client.send_silence(1500)  # the inter-digit pause passes in call time
    item = await session.expect_event("conversation.item.create", timeout=3)
    assert item["item"]["role"] == "user"
    assert "7" in item["item"]["content"][0]["text"]
    await client.hang_up()
    call = await wait_for_call(client.call_sid, ended=True)
    assert await call.transcript_entries.filter(role="dtmf", text="7").aexists()


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs the Redis channel layer "
                    "(REDIS_URL) to reach the server process; CI sets it")
async def test_a_call_can_be_hung_up_from_another_process(
    e2e_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    from channels.layers import get_channel_layer

    from voiceconv.consumers import MediaStreamConsumer

    client = await enter_call(e2e_server, realtime=True)
    session = await standin.wait_for_session(0, timeout=10)
    await session.expect_event("session.update")
    layer = get_channel_layer()
    assert layer is not None
    await asyncio.sleep(0.3)  # the consumer has joined its group
    await layer.group_send(MediaStreamConsumer.group_name(client.call_sid),
                           {"type": "voiceconv.hangup", "reason": "agent_ended"})
    await play_until_closed(client)
    call = await wait_for_call(client.call_sid, ended=True)
    assert call.end_reason == "agent_ended"
