"""The consumer in process, through Channels' WebsocketCommunicator (no server, no OpenAI)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from voiceconv import active_calls, health
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


# ------------------------------------------------------------ rule 12: the call's start


class _HangingDatabase(MediaStreamConsumer):
    """The stream claim hangs for call ``CA_slow`` (a database that does not answer) until the
    test ends, well past ``START_DATABASE_TIMEOUT``; no
    OpenAI session, no telephony, no records: only the start is under test."""

    release = threading.Event()
    started_calls: ClassVar[list[str]] = []

    def _claim_call_sync(self) -> Any:
        assert self.info is not None
        if self.info.call_sid == "CA_slow":
            self.release.wait(30)
        return None, None, {}

    async def start_telephony(self) -> Any:
        return None

    def make_recorder(self) -> Any:
        return None

    async def realtime_loop(self) -> None:
        assert self.info is not None
        self.started_calls.append(self.info.call_sid)
        await asyncio.Event().wait()


async def until(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def start_frame(call_sid: str) -> str:
    sid = "MZ" + call_sid
    return json.dumps({"event": "start", "streamSid": sid, "start": {
        "streamSid": sid, "callSid": call_sid, "accountSid": "AC1", "customParameters": {}}})


@override_settings(VOICECONV={"REQUIRE_STREAM_TOKEN": False, "ALLOW_UNSIGNED_STREAMS": True,
                              "START_DATABASE_TIMEOUT": 3.0, "STREAM_START_TIMEOUT": 60})
async def test_a_hanging_database_at_start_stalls_neither_another_call_nor_itself(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _HangingDatabase.started_calls.clear()
    _HangingDatabase.release.clear()
    slow = WebsocketCommunicator(_HangingDatabase.as_asgi(), PATH)
    fast = WebsocketCommunicator(_HangingDatabase.as_asgi(), PATH)
    try:
        assert (await slow.connect(timeout=5))[0] and (await fast.connect(timeout=5))[0]
        with caplog.at_level(logging.INFO, logger="voiceconv.consumers"):
            await slow.send_to(text_data=start_frame("CA_slow"))
            await asyncio.sleep(0.1)  # the slow claim is hanging in its thread now
            await fast.send_to(text_data=start_frame("CA_fast"))
            # The single shared thread of sync_to_async is free meanwhile...
            assert await sync_to_async(lambda: 42)() == 42
            # ... and the second call starts while the first one's claim still hangs.
            await until(lambda: bool(_HangingDatabase.started_calls), 20)
            assert _HangingDatabase.started_calls == ["CA_fast"]
            # The slow call goes on with the defaults once the timeout passes, and says why.
            await until(lambda: len(_HangingDatabase.started_calls) == 2, 20)
            assert _HangingDatabase.started_calls == ["CA_fast", "CA_slow"]
        lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert lines == ["call CA_slow: database did not answer within 3.0 s at stream start; "
                         "going on with the defaults and no tools"], lines
    finally:
        _HangingDatabase.release.set()
        for comm in (slow, fast):
            await comm.disconnect()


class _SlowRecords:
    """A recorder whose records take until the test lets them go to be written."""

    written = asyncio.Event()

    def start(self) -> None:
        return None

    def stream_started(self, at: Any) -> None:
        return None

    def turn(self, turn: Any) -> None:
        return None

    def ended(self, reason: str, error: str = "", traceback: str = "") -> None:
        return None

    async def aclose(self) -> None:
        await self.written.wait()


class _SlowEnding(_HangingDatabase):
    def make_recorder(self) -> Any:
        return _SlowRecords()


@override_settings(VOICECONV={"REQUIRE_STREAM_TOKEN": False, "ALLOW_UNSIGNED_STREAMS": True})
async def test_a_drain_waits_for_a_call_that_is_still_being_finished() -> None:
    """A call that has ended leaves the calls in progress at once, but SIGTERM's drain
    (``health._live_here``) counts it until its records are handed over: a server stopped
    just after a hang-up must not kill the call's ending half-way."""
    _SlowRecords.written = asyncio.Event()
    comm = WebsocketCommunicator(_SlowEnding.as_asgi(), PATH)
    assert (await comm.connect(timeout=5))[0]
    await comm.send_to(text_data=start_frame("CA_ending"))
    await until(lambda: _HangingDatabase.started_calls[-1:] == ["CA_ending"], 20)
    assert active_calls.count() == 1 and health._live_here() == 1
    await comm.send_to(text_data=json.dumps({"event": "stop", "streamSid": "MZCA_ending"}))
    await until(lambda: active_calls.count() == 0, 20)
    await asyncio.sleep(0.2)
    assert health._live_here() == 1  # still being finished: the drain goes on waiting
    _SlowRecords.written.set()
    await until(lambda: health._live_here() == 0, 20)
    await comm.disconnect(timeout=10)


# ------------------------------------------------------------ rule 7: reconnect attempts


class _FlakyRealtime:
    """A Realtime connection that is ready, then drops; every later connect is refused."""

    connects: ClassVar[int] = 0

    def __init__(self) -> None:
        self._events: list[str] = []

    @property
    def connection(self) -> Any:
        return None

    async def connect(self) -> None:
        _FlakyRealtime.connects += 1
        if _FlakyRealtime.connects > 1:
            raise ConnectionRefusedError("refused")
        self._events = [json.dumps({"type": "session.updated", "session": {}})]

    async def send(self, text: str) -> None:
        return None

    async def recv(self) -> str:
        if self._events:
            return self._events.pop(0)
        await asyncio.sleep(0.05)
        raise ConnectionResetError("dropped")

    async def close(self) -> None:
        return None


class _NoRecords(_HangingDatabase):
    """The consumer with the flaky connection and a quick start (no database, no records)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, backend_factory=lambda _c: _FlakyRealtime(), **kwargs)

    realtime_loop = MediaStreamConsumer.realtime_loop


@pytest.mark.parametrize(("attempts", "connects"), [(0, 1), (1, 2), (3, 4)])
async def test_reconnect_attempts_mean_what_they_say(
    attempts: int, connects: int, tmp_path: Path
) -> None:
    _FlakyRealtime.connects = 0
    apology = tmp_path / "apology.ulaw"
    apology.write_bytes(b"\xff" * 160)  # a short one: nobody echoes its mark here
    with override_settings(VOICECONV={
        "REQUIRE_STREAM_TOKEN": False, "ALLOW_UNSIGNED_STREAMS": True,
        "REALTIME_RECONNECT_ATTEMPTS": attempts, "APOLOGY_AUDIO": str(apology),
    }):
        comm = WebsocketCommunicator(_NoRecords.as_asgi(), PATH)
        assert (await comm.connect(timeout=5))[0]
        await comm.send_to(text_data=start_frame("CA_flaky"))
        while True:  # the apology plays, then the stream is closed
            out = await comm.receive_output(timeout=30)
            if out["type"] == "websocket.close":
                break
        await comm.disconnect(timeout=10)  # Twilio's side of the close
    assert _FlakyRealtime.connects == connects  # 0: no reconnect; N: N attempts


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
        await closed_by_the_server(comm, 4403)
    assert closed == {"type": "websocket.close", "code": 4403}
    (refused,) = [r for r in caplog.records if "stream refused" in r.getMessage()]
    assert refused.getMessage().startswith(f"call CA{'2' * 32}: stream refused")
    assert refused.call_sid == "CA" + "2" * 32
