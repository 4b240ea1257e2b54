"""The consumer in process, through Channels' WebsocketCommunicator (no server, no OpenAI)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from voiceconv.consumers import MediaStreamConsumer
from voiceconv.security import public_origin

PATH = "/twilio/stream/"


def communicator(headers: list[tuple[bytes, bytes]] | None = None) -> WebsocketCommunicator:
    return WebsocketCommunicator(MediaStreamConsumer.as_asgi(), PATH, headers=headers or [])


@pytest.fixture(autouse=True)
def in_memory_layer(settings: Any) -> None:
    """These tests are about the handshake: the in-memory layer, whatever the suite's layer.

    (The Redis layer is exercised by the end-to-end tests, against a server process.)
    """
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


async def closed_by_the_server(comm: WebsocketCommunicator, code: int) -> None:
    """What an ASGI server does once the application has closed the socket: it reports the
    disconnect, and the consumer ends on its own (no cancellation needed)."""
    await comm.send_input({"type": "websocket.disconnect", "code": code})
    await comm.wait(timeout=10)


@override_settings(VOICECONV={"VALIDATE_TWILIO_SIGNATURE": True})
async def test_an_upgrade_without_a_signature_is_refused_when_checks_are_on() -> None:
    comm = communicator([(b"host", b"voice.example.test")])
    connected, code = await comm.connect(timeout=5)
    assert not connected
    await closed_by_the_server(comm, code if isinstance(code, int) else 1000)


@override_settings(VOICECONV={"VALIDATE_TWILIO_SIGNATURE": True, "ALLOW_UNSIGNED_STREAMS": True,
                              "STREAM_START_TIMEOUT": 0.2})
async def test_allow_unsigned_streams_lets_it_in_and_a_stream_without_start_is_closed() -> None:
    comm = communicator([(b"host", b"voice.example.test")])
    connected, _ = await comm.connect(timeout=5)
    assert connected
    await comm.send_to(text_data=json.dumps({"event": "connected", "protocol": "Call"}))
    closed: dict[str, Any] = await comm.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 4408}
    await closed_by_the_server(comm, 4408)


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
    await closed_by_the_server(comm, 4408)


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
