"""Tests for the shipped Twilio Media Streams client, against real loopback servers."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, VoiceResponse
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from voiceconv.testing import fixtures
from voiceconv.testing.fixtures import TwilioStreamClientFactory
from voiceconv.testing.realtime_server import RealtimeStandIn
from voiceconv.testing.twilio_client import TwilioStreamClient, TwilioWebhookError

twilio_stream_client = fixtures.twilio_stream_client
realtime_standin = fixtures.realtime_standin

TOKEN = "12345678901234567890123456789012"
SID_RE = {p: re.compile(rf"^{p}[0-9a-f]{{32}}$") for p in ("CA", "MZ", "AC")}


def audio(ms: int, seed: int = 1) -> bytes:
    """Distinct, non-silent bytes so byte-for-byte comparisons mean something."""
    return bytes((seed * 7 + i * 13) % 0x7F for i in range(ms * 8))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class FakeApp:
    """A tiny websocket server playing the app: records what arrives, sends what it's told."""

    def __init__(self) -> None:
        self.server: Server | None = None
        self.conn: ServerConnection | None = None
        self.connected = asyncio.Event()
        self.raw: list[str | bytes] = []
        self.received: list[dict[str, Any]] = []
        self._changed = asyncio.Event()

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/twilio/stream/"

    async def handler(self, ws: ServerConnection) -> None:
        self.conn = ws
        self.connected.set()
        try:
            async for message in ws:
                self.raw.append(message)
                self.received.append(json.loads(message))
                self._changed.set()
        except ConnectionClosed:
            pass

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        await self.connected.wait()
        assert self.conn is not None
        data = json.dumps(message) if isinstance(message, dict) else message
        await self.conn.send(data)

    async def send_media(self, stream_sid: str, data: bytes) -> None:
        message = {"event": "media", "streamSid": stream_sid, "media": {"payload": b64(data)}}
        await self.send(message)

    async def send_mark(self, stream_sid: str, name: str) -> None:
        await self.send({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 2.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def events(self, name: str) -> list[dict[str, Any]]:
        return [m for m in self.received if m["event"] == name]


@pytest.fixture
async def app() -> AsyncIterator[FakeApp]:
    fake = FakeApp()
    fake.server = await serve(fake.handler, "127.0.0.1", 0)
    try:
        yield fake
    finally:
        fake.server.close()
        await fake.server.wait_closed()


@pytest.fixture
async def call(app: FakeApp, twilio_stream_client: TwilioStreamClientFactory) -> TwilioStreamClient:
    client = await twilio_stream_client.start_call(app.url, custom_parameters={"agent": "support"})
    await app.wait_for(lambda: len(app.received) >= 2)
    return client


async def test_connected_and_start_have_twilio_shapes(
    app: FakeApp, twilio_stream_client: TwilioStreamClientFactory
) -> None:
    client = twilio_stream_client(app.url, custom_parameters={"call_token": "tok", "agent": "a"})
    await client.start_call()
    await app.wait_for(lambda: len(app.received) >= 2)

    connected, start = app.received
    assert connected == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    assert set(start) == {"event", "sequenceNumber", "streamSid", "start"}
    assert start["event"] == "start"
    assert start["sequenceNumber"] == "1"
    assert SID_RE["MZ"].match(start["streamSid"])
    body = start["start"]
    assert set(body) == {
        "accountSid",
        "streamSid",
        "callSid",
        "tracks",
        "mediaFormat",
        "customParameters",
    }
    assert body["streamSid"] == start["streamSid"] == client.stream_sid
    assert SID_RE["CA"].match(body["callSid"]) and body["callSid"] == client.call_sid
    assert SID_RE["AC"].match(body["accountSid"]) and body["accountSid"] == client.account_sid
    assert body["tracks"] == ["inbound"]
    assert body["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    assert isinstance(body["mediaFormat"]["sampleRate"], int)
    assert body["customParameters"] == {"call_token": "tok", "agent": "a"}
    assert app.conn is not None
    headers = app.conn.request.headers if app.conn.request else {}
    assert "x-twilio-signature" not in headers
    assert "Sec-WebSocket-Protocol" not in headers
    assert app.conn.request is not None and app.conn.request.path == "/twilio/stream/"


async def test_given_sids_are_used(
    app: FakeApp, twilio_stream_client: TwilioStreamClientFactory
) -> None:
    sids = {
        "call_sid": "CA" + "1" * 32,
        "stream_sid": "MZ" + "2" * 32,
        "account_sid": "AC" + "3" * 32,
    }
    await twilio_stream_client.start_call(app.url, **sids)
    await app.wait_for(lambda: len(app.received) >= 2)
    start = app.received[1]
    assert start["streamSid"] == sids["stream_sid"]
    assert start["start"]["callSid"] == sids["call_sid"]
    assert start["start"]["accountSid"] == sids["account_sid"]


async def test_media_frames_dtmf_and_stop_count_like_twilio(
    app: FakeApp, call: TwilioStreamClient
) -> None:
    sent = audio(1000)
    await call.send_audio(sent)
    await call.send_dtmf("5")
    await call.send_stop()
    await app.wait_for(lambda: len(app.received) == 2 + 50 + 2)

    media = app.events("media")
    assert len(media) == 50
    for i, frame in enumerate(media):
        assert set(frame) == {"event", "sequenceNumber", "streamSid", "media"}
        assert frame["streamSid"] == call.stream_sid
        assert frame["sequenceNumber"] == str(i + 2)
        assert set(frame["media"]) == {"track", "chunk", "timestamp", "payload"}
        assert frame["media"]["track"] == "inbound"
        assert frame["media"]["chunk"] == str(i + 1)
        assert frame["media"]["timestamp"] == str(i * 20)
        assert base64.b64decode(frame["media"]["payload"]) == sent[i * 160 : (i + 1) * 160]
    # sent_frames match what the server got, byte for byte, with non-decreasing times
    assert [p for _, p in call.sent_frames] == [f["media"]["payload"] for f in media]
    times = [t for t, _ in call.sent_frames]
    assert times == sorted(times)

    dtmf, stop = app.received[-2:]
    assert dtmf == {
        "event": "dtmf",
        "sequenceNumber": "52",
        "streamSid": call.stream_sid,
        "dtmf": {"track": "inbound_track", "digit": "5"},
    }
    assert stop == {
        "event": "stop",
        "sequenceNumber": "53",
        "streamSid": call.stream_sid,
        "stop": {"accountSid": call.account_sid, "callSid": call.call_sid},
    }
    assert call.call_time_ms == 1000


async def test_first_timestamp_offset_and_short_last_frame(
    app: FakeApp, twilio_stream_client: TwilioStreamClientFactory
) -> None:
    client = await twilio_stream_client.start_call(app.url, first_timestamp=5)
    await client.send_audio(audio(50))  # 400 bytes: 160 + 160 + 80
    await app.wait_for(lambda: len(app.events("media")) == 3)
    media = [m["media"] for m in app.events("media")]
    assert [m["timestamp"] for m in media] == ["5", "25", "45"]
    assert [len(base64.b64decode(m["payload"])) for m in media] == [160, 160, 80]
    assert client.call_time_ms == 50


async def test_virtual_playout_echoes_marks_at_call_time(
    app: FakeApp, call: TwilioStreamClient
) -> None:
    first, second = audio(375, seed=2), audio(625, seed=3)
    await app.send_media(call.stream_sid, first[:1000])
    await app.send_media(call.stream_sid, first[1000:])
    await app.send_mark(call.stream_sid, "a")
    await app.send_media(call.stream_sid, second)
    await app.send_mark(call.stream_sid, "b")
    await call.wait_for_marks(2)
    assert call.received_bytes == 8000
    assert call.pending_marks == ["a", "b"]
    assert not app.events("mark")  # nothing played yet: call time has not moved

    await call.send_silence(360)  # call time 360 ms: 2880 bytes played, "a" still queued
    assert bytes(call.heard) == first[:2880]
    assert call.played_ms == 360
    assert not call.echoed_marks

    await call.send_silence(40)  # crosses 375 ms during the 19th frame
    mark_a = call.mark("a")
    assert mark_a.echo_call_ms == 375
    assert mark_a.heard_bytes == 3000 and not mark_a.cleared
    await app.wait_for(lambda: len(app.events("mark")) == 1)
    # The echo is sent between the 18th and the 19th inbound frame, as Twilio would.
    kinds = [(m["event"], m.get("media", {}).get("chunk")) for m in app.received[2:]]
    assert kinds[18] == ("mark", None) and kinds[17] == ("media", "18")
    echo = app.events("mark")[0]
    assert echo == {
        "event": "mark",
        "sequenceNumber": str(2 + 18),
        "streamSid": call.stream_sid,
        "mark": {"name": "a"},
    }

    await call.send_silence(600)  # call time 1000 ms: everything played
    assert call.mark("b").echo_call_ms == 1000
    assert bytes(call.heard) == first + second
    assert call.queued_bytes == 0
    await call.send_silence(100)
    assert bytes(call.heard) == first + second  # nothing left to play
    await app.wait_for(lambda: len(app.events("mark")) == 2)
    assert [m["mark"]["name"] for m in app.events("mark")] == ["a", "b"]
    assert call.played_bytes_by_mark() == {"a": 3000, "b": 5000}
    assert [r.played for r in call.media_records] == [1000, 2000, 5000]
    seqs = [int(m["sequenceNumber"]) for m in app.received[1:]]
    assert seqs == list(range(1, len(seqs) + 1))


async def test_audio_arriving_after_a_gap_starts_playing_then(
    app: FakeApp, call: TwilioStreamClient
) -> None:
    await call.send_silence(200)
    await app.send_media(call.stream_sid, audio(100))
    await app.send_mark(call.stream_sid, "m")
    await call.wait_for_marks(1)
    await call.send_silence(200)
    assert call.mark("m").echo_call_ms == 300
    assert call.played_ms == 100


async def test_clear_drops_audio_and_echoes_pending_marks_at_once(
    app: FakeApp, call: TwilioStreamClient
) -> None:
    await app.send_media(call.stream_sid, audio(1000, seed=4))
    await app.send_mark(call.stream_sid, "m1")
    await app.send_media(call.stream_sid, audio(1000, seed=5))
    await app.send_mark(call.stream_sid, "m2")
    await call.wait_for_marks(2)
    await call.send_silence(300)
    await app.wait_for(lambda: len(app.events("media")) == 15)

    await app.send({"event": "clear", "streamSid": call.stream_sid})
    clear = await call.expect_event("clear")
    assert clear == {"event": "clear", "streamSid": call.stream_sid}
    await app.wait_for(lambda: len(app.events("mark")) == 2)
    names = [m["mark"]["name"] for m in app.events("mark")]
    assert names == ["m1", "m2"]
    seqs = [int(m["sequenceNumber"]) for m in app.events("mark")]
    assert seqs[1] == seqs[0] + 1  # back to back, nothing in between

    assert len(call.clears) == 1
    record = call.clear_records[0]
    assert record.heard_bytes == 2400 and record.run_played == 2400 and record.run_played_ms == 300
    assert record.run_received == 16000
    assert record.dropped_bytes == 16000 - 2400
    assert record.flushed_marks == ["m1", "m2"]
    assert record.call_ms == 300
    assert all(m.cleared and m.echo_call_ms == 300 for m in call.received_marks)
    assert call.queued_bytes == 0 and call.pending_marks == []
    assert bytes(call.heard) == audio(1000, seed=4)[:2400]

    await call.send_silence(500)
    assert len(call.heard) == 2400  # dropped audio never plays

    # After the clear the buffer is empty: a mark comes back immediately.
    await app.send_mark(call.stream_sid, "m3")
    await app.wait_for(lambda: len(app.events("mark")) == 3)
    assert call.mark("m3").echo_call_ms == 800 and not call.mark("m3").cleared

    # New audio after a clear plays normally and starts a new run.
    await app.send_media(call.stream_sid, audio(40, seed=6))
    await app.send({"event": "clear", "streamSid": call.stream_sid})
    await call.expect_event("clear")
    assert call.clear_records[1].run_received == 320 and call.clear_records[1].run_played == 0
    await app.send_media(call.stream_sid, audio(40, seed=7))
    await call.wait_for_media(count=4)
    await call.send_silence(40)
    assert bytes(call.heard[2400:]) == audio(40, seed=7)


async def test_mark_with_empty_buffer_echoes_immediately(
    app: FakeApp, call: TwilioStreamClient
) -> None:
    await app.send_mark(call.stream_sid, "now")
    await app.wait_for(lambda: len(app.events("mark")) == 1)
    assert app.events("mark")[0]["mark"] == {"name": "now"}
    assert app.events("mark")[0]["sequenceNumber"] == "2"
    assert call.mark("now").echo_call_ms == 0 and call.mark("now").heard_bytes == 0


async def test_bad_messages_are_violations_and_the_call_goes_on(
    app: FakeApp, call: TwilioStreamClient
) -> None:
    sid = call.stream_sid
    bad: list[str | bytes] = [
        b"\x00\x01binary",
        "not json",
        json.dumps([1, 2]),
        json.dumps({"event": "media", "streamSid": "MZ" + "0" * 32, "media": {"payload": "AAAA"}}),
        json.dumps({"event": "mark", "mark": {"name": "x"}}),
        json.dumps({"event": "hello", "streamSid": sid}),
        json.dumps({"event": "media", "streamSid": sid, "media": {}}),
        json.dumps({"event": "media", "streamSid": sid, "media": {"payload": "***"}}),
        json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": 3}}),
        json.dumps({"event": "clear", "streamSid": sid, "extra": 1}),
    ]
    for message in bad:
        await app.send(message)
    await app.send_media(sid, audio(20))
    await call.wait_for_media(count=1)

    assert [v.code for v in call.violations] == [31950] + [31951] * (len(bad) - 1)
    assert [v.raw for v in call.violations] == bad
    assert len(call.media_records) == 1 and call.received_bytes == 160
    assert call.received_marks == [] and call.clears == []
    assert [m["event"] for m in call.all_messages] == ["media"]
    assert call.connected
    await call.send_silence(20)
    assert bytes(call.heard) == audio(20)


async def test_messages_before_start_are_violations(
    app: FakeApp, twilio_stream_client: TwilioStreamClientFactory
) -> None:
    client = twilio_stream_client(app.url)
    await client.connect()
    await app.send_mark(client.stream_sid, "early")
    await client.wait_for(lambda: len(client.violations) == 1)
    assert "before start" in client.violations[0].reason
    assert client.received_marks == []


async def test_send_raw_reaches_the_app(app: FakeApp, call: TwilioStreamClient) -> None:
    await call.send_raw('{"event": "bogus"}')
    await app.wait_for(lambda: len(app.received) == 3)
    assert app.raw[-1] == '{"event": "bogus"}'


async def test_expect_event_and_waits_time_out_quickly(call: TwilioStreamClient) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="clear"):
        await call.expect_event("clear", timeout=0.1)
    with pytest.raises(TimeoutError, match="media"):
        await call.wait_for_media(160, timeout=0.1)
    assert time.monotonic() - started < 1.0


async def test_server_close_is_recorded(app: FakeApp, call: TwilioStreamClient) -> None:
    assert app.conn is not None
    await app.conn.close(1000, "call ended")
    assert await call.wait_closed() == 1000
    assert call.close_reason == "call ended"
    assert call.closed.is_set() and not call.connected
    with pytest.raises(TimeoutError, match="closed"):
        await call.expect_event("media", timeout=1)


async def test_hang_up_sends_stop_then_closes(app: FakeApp, call: TwilioStreamClient) -> None:
    await call.hang_up()
    assert call.closed.is_set()
    await app.wait_for(lambda: app.received[-1]["event"] == "stop")
    assert app.conn is not None
    await asyncio.wait_for(app.conn.wait_closed(), 2)
    assert app.conn.close_code == 1000


async def test_realtime_paces_frames_at_20ms(
    app: FakeApp, twilio_stream_client: TwilioStreamClientFactory
) -> None:
    client = await twilio_stream_client.start_call(app.url, realtime=True)
    started = time.monotonic()
    await client.send_silence(500)  # 25 frames
    elapsed = time.monotonic() - started
    assert len(client.sent_frames) == 25
    assert elapsed >= 0.45
    assert elapsed < 2.0
    gaps = [b[0] - a[0] for a, b in zip(client.sent_frames, client.sent_frames[1:], strict=False)]
    assert min(gaps) > 0.005
    await app.wait_for(lambda: len(app.events("media")) == 25)
    timestamps = [int(m["media"]["timestamp"]) for m in app.events("media")]
    assert timestamps == [20 * i for i in range(25)]


async def test_realtime_playout_follows_wall_time(
    app: FakeApp, twilio_stream_client: TwilioStreamClientFactory
) -> None:
    client = await twilio_stream_client.start_call(app.url, realtime=True)
    await app.wait_for(lambda: len(app.received) == 2)
    await app.send_media(client.stream_sid, audio(200))
    await app.send_mark(client.stream_sid, "end")
    await client.wait_for_marks(1)
    sent_at = client.mark("end").received_at
    await app.wait_for(lambda: len(app.events("mark")) == 1, timeout=2)
    mark = client.mark("end")
    assert mark.echoed_at is not None and mark.echo_call_ms is not None
    assert mark.echoed_at - sent_at >= 0.15
    assert mark.heard_bytes == 1600 and bytes(client.heard) == audio(200)
    assert mark.echo_call_ms - mark.received_call_ms == pytest.approx(200, abs=25)


def test_signature_header_validates_over_the_wss_url() -> None:
    client = TwilioStreamClient("ws://127.0.0.1:8123/twilio/stream/abc/", auth_token=TOKEN)
    [(name, signature)] = client.handshake_headers()
    assert name == "x-twilio-signature"
    validator = RequestValidator(TOKEN)
    assert validator.validate("wss://127.0.0.1:8123/twilio/stream/abc/", {}, signature)
    assert not validator.validate("https://127.0.0.1:8123/twilio/stream/abc/", {}, signature)
    assert not validator.validate("ws://127.0.0.1:8123/twilio/stream/abc/", {}, signature)

    public = TwilioStreamClient(
        "ws://127.0.0.1:8123/twilio/stream/",
        auth_token=TOKEN,
        signature_url="wss://voice.example.com/twilio/stream/",
        extra_headers={"X-Extra": "1"},
    )
    headers = dict(public.handshake_headers())
    signature = headers["x-twilio-signature"]
    assert validator.validate("wss://voice.example.com/twilio/stream/", {}, signature)
    assert validator.validate("wss://voice.example.com:443/twilio/stream/", {}, signature)
    assert headers["X-Extra"] == "1"


async def test_signature_header_arrives_on_the_upgrade(
    app: FakeApp, twilio_stream_client: TwilioStreamClientFactory
) -> None:
    await twilio_stream_client.start_call(app.url, auth_token=TOKEN)
    await app.connected.wait()
    assert app.conn is not None and app.conn.request is not None
    signature = app.conn.request.headers["x-twilio-signature"]
    url = f"wss://127.0.0.1:{app.port}/twilio/stream/"
    assert RequestValidator(TOKEN).validate(url, {}, signature)


# ---------------------------------------------------------------------- from_webhook


class WebhookServer:
    """A stdlib HTTP server in a thread answering the incoming-call webhook with TwiML."""

    public_url = "https://voice.example.com"

    def __init__(self, *, status: int = 200, twiml: str | None = None) -> None:
        self.requests: list[tuple[str, dict[str, str], dict[str, str]]] = []
        self.status = status
        self.twiml = twiml
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                outer.requests.append((self.path, dict(self.headers), form))
                ok = RequestValidator(TOKEN).validate(
                    outer.public_url + self.path, form, self.headers.get("X-Twilio-Signature", "")
                )
                status, body = (outer.status, outer.render(form)) if ok else (403, "bad signature")
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def render(self, form: dict[str, str]) -> str:
        if self.twiml is not None:
            return self.twiml
        vr = VoiceResponse()
        connect = Connect(action="https://voice.example.com/twilio/after-stream/")
        stream = connect.stream(url="wss://voice.example.com/twilio/stream/s1/")
        stream.parameter(name="call_token", value="tok-" + form["CallSid"][-4:])
        stream.parameter(name="agent", value="support")
        vr.append(connect)
        return str(vr)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture
def webhook() -> Iterator[WebhookServer]:
    server = WebhookServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        server.thread.join()


async def test_from_webhook_posts_a_signed_form_and_follows_the_twiml(
    app: FakeApp, webhook: WebhookServer, twilio_stream_client: TwilioStreamClientFactory
) -> None:
    client = await twilio_stream_client.from_webhook(
        webhook.base,
        auth_token=TOKEN,
        public_url=webhook.public_url,
        stream_base=f"ws://127.0.0.1:{app.port}",
        form={"From": "+447700900123"},
    )
    [(path, headers, form)] = webhook.requests
    assert path == "/twilio/incoming/"
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert form["CallSid"] == client.call_sid and SID_RE["CA"].match(client.call_sid)
    assert form["AccountSid"] == client.account_sid
    assert form["CallStatus"] == "ringing" and form["Direction"] == "inbound"
    assert form["ApiVersion"] == "2010-04-01"
    assert form["From"] == form["Caller"] == "+447700900123"
    assert form["To"] == form["Called"]

    assert client.url == f"ws://127.0.0.1:{app.port}/twilio/stream/s1/"
    assert client.signature_url == "wss://voice.example.com/twilio/stream/s1/"
    assert client.connect_action == "https://voice.example.com/twilio/after-stream/"
    token = "tok-" + client.call_sid[-4:]
    assert client.custom_parameters == {"call_token": token, "agent": "support"}

    await client.start_call()
    await app.wait_for(lambda: len(app.received) == 2)
    start = app.received[1]["start"]
    assert start["callSid"] == client.call_sid
    assert start["customParameters"] == client.custom_parameters
    assert app.conn is not None and app.conn.request is not None
    assert RequestValidator(TOKEN).validate(
        "wss://voice.example.com/twilio/stream/s1/",
        {},
        app.conn.request.headers["x-twilio-signature"],
    )


async def test_from_webhook_defaults_to_the_http_host(webhook: WebhookServer) -> None:
    # Without public_url the request is signed over the URL requested, which this server rejects.
    with pytest.raises(TwilioWebhookError, match="403"):
        await TwilioStreamClient.from_webhook(webhook.base, auth_token=TOKEN)
    webhook.public_url = webhook.base
    client = await TwilioStreamClient.from_webhook(webhook.base, auth_token=TOKEN)
    assert client.url == f"ws://127.0.0.1:{webhook.httpd.server_address[1]}/twilio/stream/s1/"
    assert client.signature_url == "wss://voice.example.com/twilio/stream/s1/"


async def test_from_webhook_without_a_stream_is_a_clear_error(webhook: WebhookServer) -> None:
    webhook.public_url = webhook.base
    vr = VoiceResponse()
    vr.say("Sorry")
    vr.hangup()
    webhook.twiml = str(vr)
    with pytest.raises(TwilioWebhookError, match="Connect"):
        await TwilioStreamClient.from_webhook(webhook.base, auth_token=TOKEN)
    webhook.twiml = "<Response"
    with pytest.raises(TwilioWebhookError, match="invalid TwiML"):
        await TwilioStreamClient.from_webhook(webhook.base, auth_token=TOKEN)


async def test_factory_closes_its_clients(app: FakeApp) -> None:
    factory = TwilioStreamClientFactory(realtime=False)
    client = await factory.start_call(app.url)
    assert client.connected
    await factory.aclose()
    assert client.closed.is_set()
    assert app.conn is not None
    await asyncio.wait_for(app.conn.wait_closed(), 2)


async def test_realtime_standin_fixture_is_listening(realtime_standin: RealtimeStandIn) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", realtime_standin.base_url)
    _reader, writer = await asyncio.open_connection("127.0.0.1", realtime_standin.port)
    writer.close()
    await writer.wait_closed()
