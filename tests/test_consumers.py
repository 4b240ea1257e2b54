"""The consumer in process, through Channels' WebsocketCommunicator (no server, no OpenAI)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from voiceconv.consumers import MediaStreamConsumer
from voiceconv.security import public_origin

PATH = "/twilio/stream/"


def communicator(headers: list[tuple[bytes, bytes]] | None = None) -> WebsocketCommunicator:
    return WebsocketCommunicator(MediaStreamConsumer.as_asgi(), PATH, headers=headers or [])


@override_settings(VOICECONV={"VALIDATE_TWILIO_SIGNATURE": True})
async def test_an_upgrade_without_a_signature_is_refused_when_checks_are_on() -> None:
    comm = communicator([(b"host", b"voice.example.test")])
    connected, _ = await comm.connect(timeout=5)
    assert not connected


@override_settings(VOICECONV={"VALIDATE_TWILIO_SIGNATURE": True, "ALLOW_UNSIGNED_STREAMS": True,
                              "STREAM_START_TIMEOUT": 0.2})
async def test_allow_unsigned_streams_lets_it_in_and_a_stream_without_start_is_closed() -> None:
    comm = communicator([(b"host", b"voice.example.test")])
    connected, _ = await comm.connect(timeout=5)
    assert connected
    await comm.send_to(text_data=json.dumps({"event": "connected", "protocol": "Call"}))
    closed: dict[str, Any] = await comm.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 4408}
    await comm.wait(timeout=5)


@override_settings(VOICECONV={"VALIDATE_TWILIO_SIGNATURE": True, "ALLOW_UNSIGNED_STREAMS": True,
                              "STREAM_START_TIMEOUT": 0.2})
async def test_bad_frames_before_start_do_not_start_the_stream() -> None:
    comm = communicator()
    connected, _ = await comm.connect(timeout=5)
    assert connected
    for text in ("not json", '{"event": "clear"}', '{"event": "media", "media": {}}'):
        await comm.send_to(text_data=text)
    closed = await comm.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 4408}
    await comm.wait(timeout=5)


@override_settings(VOICECONV={"PUBLIC_URL": ""})
def test_the_consumer_and_the_views_derive_the_public_origin_the_same_way() -> None:
    from django.test import RequestFactory

    headers = {"HTTP_HOST": "internal:8000", "HTTP_X_FORWARDED_PROTO": "https",
               "HTTP_X_FORWARDED_HOST": "voice.example.test, proxy"}
    request = RequestFactory().post("/twilio/incoming/", **headers)  # type: ignore[arg-type]
    scope = {"type": "websocket", "scheme": "ws", "headers": [
        (b"host", b"internal:8000"), (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-host", b"voice.example.test, proxy")]}
    assert public_origin(request) == public_origin(scope) == "https://voice.example.test"
    plain = {"type": "websocket", "scheme": "ws", "headers": [(b"host", b"internal:8000")]}
    assert public_origin(plain) == public_origin(
        RequestFactory().post("/", HTTP_HOST="internal:8000")) == "http://internal:8000"


async def test_no_consumer_is_left_running() -> None:
    await asyncio.sleep(0)
    assert MediaStreamConsumer.active_calls() == 0


@override_settings(VOICECONV={"VALIDATE_TWILIO_SIGNATURE": True, "ALLOW_UNSIGNED_STREAMS": True})
async def test_consumer_lines_name_the_call(caplog: pytest.LogCaptureFixture) -> None:
    """Once ``start`` names the call, every line about it says which call, also as a field."""
    comm = communicator()
    connected, _ = await comm.connect(timeout=5)
    assert connected
    start = {"event": "start", "streamSid": "MZ" + "1" * 32,
             "start": {"callSid": "CA" + "2" * 32, "streamSid": "MZ" + "1" * 32,
                       "customParameters": {}}}
    with caplog.at_level(logging.WARNING, logger="voiceconv.consumers"):
        await comm.send_to(text_data=json.dumps({"event": "connected", "protocol": "Call"}))
        await comm.send_to(text_data=json.dumps(start))
        closed = await comm.receive_output(timeout=5)
        await comm.wait(timeout=5)
    assert closed == {"type": "websocket.close", "code": 4403}
    (refused,) = [r for r in caplog.records if "stream refused" in r.getMessage()]
    assert refused.getMessage().startswith(f"call CA{'2' * 32}: stream refused")
    assert refused.call_sid == "CA" + "2" * 32
