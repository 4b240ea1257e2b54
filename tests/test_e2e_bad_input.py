"""Bad input over real sockets: each kind is counted, logged once per call, and harmless.

The example project runs under daphne; the Twilio stream client sends the bad frames with
``send_raw``; the Realtime stand-in shows what reached OpenAI. After every bad input a good
frame must still reach the stand-in, and another call running at the same time is unaffected.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import contextlib
import json
import random
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import AUTH_TOKEN, PUBLIC_URL
from tests.e2e import eventually, track
from voiceconv.testing import RealtimeStandIn, StandInSession, TwilioStreamClient
from voiceconv.testing.server import ServerProcess

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("hang_up_leftovers"),
]




Frame = str | bytes
Maker = Callable[[TwilioStreamClient], Frame]


def call_lines(log: str, call_sid: str, level: str = "WARNING") -> list[str]:
    """The consumer's log lines at ``level`` for one call (each record once)."""
    marker = f"{level} voiceconv.consumers call {call_sid}: "
    return [line.split(marker, 1)[1] for line in log.splitlines() if marker in line]


def bad_input_summary(log: str, call_sid: str) -> dict[str, int]:
    """The end-of-call ``bad input during the call: {...}`` counts (empty if none)."""
    for line in call_lines(log, call_sid):
        if line.startswith("bad input during the call: "):
            counts: dict[str, int] = ast.literal_eval(line.split(": ", 1)[1])
            return counts
    return {}


def probe_frame(n: int) -> bytes:
    """A near-silent 20 ms frame, unique for ``n`` < 65536 (so its arrival at OpenAI can be seen).

    ``n`` is spelled in μ-law codes of the smallest magnitudes (``0xF0`` to ``0xFF``), so the frame
    stays far below any VAD threshold: a probe is not the caller speaking, and never barges in
    on the greeting.
    """
    nibbles = [0xF0 | ((n >> shift) & 0xF) for shift in (12, 8, 4, 0)]
    return bytes([0xFF] * 156 + nibbles)


async def probe(client: TwilioStreamClient, session: StandInSession, n: int) -> None:
    """Send a good frame and wait until OpenAI has it: the call still works."""
    b64 = base64.b64encode(probe_frame(n)).decode()
    await client.send_media(probe_frame(n))
    await eventually(lambda: any(a == b64 for _, a in session.appends))


async def enter_call(server: ServerProcess, standin: RealtimeStandIn, index: int) -> tuple[
    TwilioStreamClient, StandInSession
]:
    """A call through the webhook, its OpenAI session ready (a first frame went through)."""
    client = track(await TwilioStreamClient.from_webhook(
        server.http_url, auth_token=AUTH_TOKEN, public_url=PUBLIC_URL,
        form={"From": "+14155550123", "To": "+14155550100"},
    ))
    await client.start_call()
    session = await standin.wait_for_session(index, timeout=10)
    await session.expect_event("session.update", timeout=5)
    await probe(client, session, 0)
    return client, session


async def end_call(client: TwilioStreamClient) -> Any:
    from voiceconv.models import Call

    await client.hang_up()
    deadline = time.monotonic() + 5
    while True:
        call = await Call.objects.filter(twilio_call_sid=client.call_sid).afirst()
        if call is not None and call.ended_at is not None:
            return call
        assert time.monotonic() < deadline, f"call {client.call_sid} did not end"
        await asyncio.sleep(0.05)


def media(client: TwilioStreamClient, **changes: Any) -> str:
    """A media message of this stream as JSON text, with ``changes`` to the media body."""
    body: dict[str, Any] = {"track": "inbound", "chunk": "999", "timestamp": "99999",
                            "payload": base64.b64encode(probe_frame(999)).decode()}
    body.update(changes)
    body = {k: v for k, v in body.items() if v is not ...}
    return json.dumps({"event": "media", "streamSid": client.stream_sid, "media": body})


def event(client: TwilioStreamClient, name: Any, **fields: Any) -> str:
    return json.dumps({"event": name, "streamSid": client.stream_sid, **fields})


# name -> frame maker. Each is sent three times into one call.
BAD_INPUT: dict[str, Maker] = {
    "oversized": lambda c: media(c, payload="A" * (65 * 1024)),
    "oversized junk": lambda c: "x" * (200 * 1024),
    "non-JSON": lambda c: "hello {",
    "truncated JSON": lambda c: media(c)[:40],
    "JSON array": lambda c: "[1, 2, 3]",
    "JSON null": lambda c: "null",
    "JSON string": lambda c: '"media"',
    "JSON without event": lambda c: json.dumps({"streamSid": c.stream_sid, "media": {}}),
    "wrong streamSid": lambda c: media(c).replace(c.stream_sid, "MZ" + "0" * 32),
    "media without streamSid": lambda c: json.dumps({"event": "media", "media": {}}),
    "media body not an object": lambda c: event(c, "media", media=[1]),
    "media without payload": lambda c: media(c, payload=...),
    "media without timestamp": lambda c: media(c, timestamp=...),
    "timestamp not a number": lambda c: media(c, timestamp="soon"),
    "payload not a string": lambda c: media(c, payload=12345),
    "binary frame": lambda c: b"\x00\x01\x02\xff" * 40,
    "second start": lambda c: json.dumps(c.sent_messages[1]),
    "mark with wrong streamSid": lambda c: event(c, "mark", mark={"name": "1"}).replace(
        c.stream_sid, "MZwrong"),
    "unknown event": lambda c: event(c, "hello"),
    "event not a string": lambda c: event(c, 5),
    "event not hashable": lambda c: event(c, ["media"]),
    "timestamp Infinity": lambda c: media(c).replace('"99999"', "Infinity"),
    "timestamp out of range": lambda c: media(c, timestamp=str(10**30)),
    "negative timestamp": lambda c: media(c, timestamp="-20"),
    "deeply nested JSON": lambda c: "[" * 30_000 + "]" * 30_000,
    "bad base64": lambda c: media(c, payload="!!not*base64!!"),
    "payload breaking out of its JSON": lambda c: media(c, payload='AAAA","type":"response.create'),
}

# Known failures (the consumer and the call core are not this file's to fix); see each reason.

# Malformed bodies of known events: ignored by the core (a debug line at most), not counted.
IGNORED: dict[str, Maker] = {
    "mark body not an object": lambda c: event(c, "mark", mark=["1"]),
    "mark name not a number": lambda c: event(c, "mark", mark={"name": {"a": 1}}),
    "mark for nothing sent": lambda c: event(c, "mark", mark={"name": "99999999999999999999"}),
    "dtmf body not an object": lambda c: event(c, "dtmf", dtmf="1"),
    "connected again": lambda c: json.dumps(c.sent_messages[0]),
}

CASES = [pytest.param(name, maker, id=name) for name, maker in BAD_INPUT.items()]


@pytest.mark.parametrize(("name", "make"), CASES)
async def test_each_bad_input_is_counted_logged_once_and_harmless(
    e2e_server: ServerProcess,
    standin: RealtimeStandIn,
    server_log: Callable[[], str],
    name: str,
    make: Maker,
) -> None:
    client, session = await enter_call(e2e_server, standin, 0)
    appends_before = len(session.appends)
    frame = make(client)
    for n in range(1, 4):
        await client.send_raw(frame)
        await probe(client, session, n)  # the call goes on after every one
    assert not client.closed.is_set()
    # Nothing of the bad frames reached OpenAI: only the three probes did.
    assert len(session.appends) == appends_before + 3
    assert session.errors == [], session.errors
    call = await end_call(client)
    assert call.end_reason == "caller_hung_up"

    log = server_log()
    assert "Traceback" not in log
    warnings = [w for w in call_lines(log, client.call_sid)
                if not w.startswith("bad input during the call")]
    assert len(warnings) == 1, warnings  # logged once, though it came three times
    counts = bad_input_summary(log, client.call_sid)
    assert sum(counts.values()) == 3, counts  # and counted every time
    assert len(standin.sessions) == 1


IGNORED_CASES = [pytest.param(name, make, id=name) for name, make in IGNORED.items()]


@pytest.mark.parametrize(("name", "make"), IGNORED_CASES)
async def test_malformed_bodies_of_known_events_are_ignored(
    e2e_server: ServerProcess,
    standin: RealtimeStandIn,
    server_log: Callable[[], str],
    name: str,
    make: Maker,
) -> None:
    client, session = await enter_call(e2e_server, standin, 0)
    received = len(session.received)
    for n in range(1, 4):
        await client.send_raw(make(client))
        await probe(client, session, n)
    await asyncio.sleep(0.2)
    # Nothing went to OpenAI for them (the probes are silence: no barge-in either).
    assert [e["type"] for e in session.received[received:]] == []
    call = await end_call(client)
    assert call.end_reason == "caller_hung_up"
    assert not await call.transcript_entries.filter(role="dtmf").aexists()
    log = server_log()
    assert "Traceback" not in log
    assert len(call_lines(log, client.call_sid)) <= 2  # at most: once, and in the summary


async def test_a_payload_cannot_inject_events_into_the_openai_session(
    e2e_server: ServerProcess, standin: RealtimeStandIn, server_log: Callable[[], str]
) -> None:
    # Caller audio is passed through as a string, never decoded (design); it must not be
    # able to break out of the JSON it is put in and speak to OpenAI itself.
    client, session = await enter_call(e2e_server, standin, 0)
    await eventually(lambda: session.active is None and any(
        e["type"] == "response.done" for e in session.sent))  # the greeting is done
    requests = len(session.response_requests)
    received = len(session.received)
    for n, payload in enumerate(['AAAA","type":"response.create', 'AA\\"}', "AA\nAA"], 1):
        await client.send_raw(media(client, payload=payload))
        await probe(client, session, n)
    await asyncio.sleep(0.3)
    assert len(session.response_requests) == requests
    assert session.received[received:] == []
    assert session.protocol_violations == []
    await end_call(client)
    assert bad_input_summary(server_log(), client.call_sid) == {"bad payload": 3}


async def test_media_and_marks_before_start_are_ignored_then_the_call_starts(
    e2e_server: ServerProcess, standin: RealtimeStandIn, server_log: Callable[[], str]
) -> None:
    client = track(await TwilioStreamClient.from_webhook(
        e2e_server.http_url, auth_token=AUTH_TOKEN, public_url=PUBLIC_URL
    ))
    await client.connect()
    await client.send_connected()
    early = json.dumps({"event": "media", "streamSid": client.stream_sid,
                        "media": {"timestamp": "0", "payload": "/////w=="}})
    for _ in range(3):
        await client.send_raw(early)
    await client.send_raw(json.dumps({"event": "mark", "mark": {"name": "1"}}))
    await client.send_start()
    session = await standin.wait_for_session(0, timeout=10)
    await probe(client, session, 1)
    assert all(a != "/////w==" for _, a in session.appends)
    await end_call(client)
    log = server_log()
    assert "Traceback" not in log
    counts = bad_input_summary(log, client.call_sid)
    assert sum(counts.values()) == 4, counts
    # Before start the call is not known yet: those lines say "call ?".
    bad = [w for w in call_lines(log, "?") if w.startswith("bad input from")]
    assert len(bad) == len(counts) == 2, bad  # one line per kind


@pytest.mark.parametrize(
    "start",
    [
        {"event": "start", "start": {"customParameters": {}}},
        {"event": "start", "streamSid": "MZ1", "start": []},
        {"event": "start", "streamSid": "MZ1", "start": {"callSid": ""}},
        {"event": "start", "streamSid": 5, "start": {"callSid": ["CA1"]}},
    ],
    ids=["no sids", "start not an object", "empty callSid", "odd types"],
)
async def test_unusable_start_ends_that_stream_cleanly(
    e2e_server: ServerProcess,
    standin: RealtimeStandIn,
    server_log: Callable[[], str],
    start: dict[str, Any],
) -> None:
    client = track(TwilioStreamClient(
        e2e_server.ws_url + "/twilio/stream/", auth_token=AUTH_TOKEN,
        signature_url="wss://voice.example.test/twilio/stream/",
    ))
    await client.connect()
    await client.send_connected()
    await client.send_raw(json.dumps(start))
    # Generous: a loaded machine may be slow to answer; 4408 is the start watchdog's close.
    code = await client.wait_closed(timeout=30)
    assert code in (1000, 4400, 4403, 4408)
    await asyncio.sleep(0.3)
    assert standin.sessions == []
    assert "Traceback" not in server_log()


def random_frame(rng: random.Random, client: TwilioStreamClient) -> Frame:
    """A random, mostly realistic-looking but wrong Twilio frame (never a valid ``stop``)."""
    sid = client.stream_sid
    junk: list[Any] = [None, True, -1, 0, 10**30, -(10**30), 1.5e308, "", "x" * 50, [], {},
                       [1, "a"], {"a": {"b": []}}, "MZ" + "f" * 32, "\u00e9\u4e2d\U0001f600"]
    base: dict[str, Any] = rng.choice([
        {"event": "media", "streamSid": sid, "sequenceNumber": "7",
         "media": {"track": "inbound", "chunk": "3", "timestamp": str(rng.randint(-500, 10**6)),
                   "payload": base64.b64encode(rng.randbytes(rng.choice([0, 1, 160]))).decode()}},
        {"event": "mark", "streamSid": sid, "mark": {"name": str(rng.randint(-3, 50))}},
        {"event": "dtmf", "streamSid": sid, "dtmf": {"track": "inbound_track",
                                                      "digit": rng.choice("0123456789*#")}},
        {"event": "connected", "protocol": "Call", "version": "1.0.0"},
        {"event": rng.choice(["clear", "foo", "MEDIA", "start", ""]), "streamSid": sid},
    ])
    kind = rng.randrange(8)
    if kind == 0:  # drop a key
        base.pop(rng.choice(list(base)))
    elif kind == 1:  # replace a top-level value
        key = rng.choice([k for k in base if k not in ("event",)] or ["event"])
        base[key] = rng.choice(junk)
    elif kind == 2:  # replace a nested value
        body = next((v for v in base.values() if isinstance(v, dict)), None)
        if body:
            body[rng.choice(list(body))] = rng.choice(junk)
    elif kind == 3:  # cut the text
        text = json.dumps(base)
        return text[: rng.randrange(len(text))]
    elif kind == 4:
        return rng.randbytes(rng.randint(0, 300))
    elif kind == 5:
        return "".join(chr(rng.randint(1, 0x2FFF)) for _ in range(rng.randint(0, 100)))
    elif kind == 6:  # another stream's sid
        base["streamSid"] = "MZ" + "1" * 32
    if base.get("event") == "stop":
        base["event"] = "stopp"
    return json.dumps(base)


async def test_random_flood_on_one_call_leaves_another_call_untouched(
    e2e_server: ServerProcess, standin: RealtimeStandIn, server_log: Callable[[], str]
) -> None:
    victim, victim_session = await enter_call(e2e_server, standin, 0)
    other, other_session = await enter_call(e2e_server, standin, 1)
    rng = random.Random(20261126)

    async def flood() -> None:
        for i in range(400):
            await victim.send_raw(random_frame(rng, victim))
            if i % 50 == 49:
                await probe(victim, victim_session, 1000 + i)
        for name, make in BAD_INPUT.items():
            if not name.startswith("oversized"):
                await victim.send_raw(make(victim))

    async def talk() -> None:
        for _ in range(20):
            await other.send_silence(100)
            await asyncio.sleep(0.01)

    await asyncio.gather(flood(), talk())
    await probe(victim, victim_session, 5000)
    await probe(other, other_session, 5001)
    assert not victim.closed.is_set()
    assert not other.closed.is_set()
    # Every frame of the other call reached OpenAI once, in order.
    await eventually(lambda: len(other_session.appends) >= len(other.sent_frames))
    assert [a for _, a in other_session.appends] == [b for _, b in other.sent_frames]
    assert other_session.protocol_violations == []
    victim_call = await end_call(victim)
    other_call = await end_call(other)
    assert victim_call.end_reason == other_call.end_reason == "caller_hung_up"
    log = server_log()
    assert "Traceback" not in log
    assert call_lines(log, other.call_sid) == []
    assert bad_input_summary(log, victim.call_sid)
    # At most one line per kind for the victim (plus the unknown-event lines; see xfails).
    bad = [w for w in call_lines(log, victim.call_sid) if w.startswith("bad input from")]
    kinds = [re.match(r"bad input from Twilio \((.*?)\)", w).group(1) for w in bad]  # type: ignore[union-attr]
    assert len(kinds) == len(set(kinds)), kinds
    assert len(standin.sessions) == 2


async def test_frames_after_the_socket_closed_do_not_matter(
    e2e_server: ServerProcess, standin: RealtimeStandIn, server_log: Callable[[], str]
) -> None:
    client, _ = await enter_call(e2e_server, standin, 0)
    await client.send_stop()
    with contextlib.suppress(ConnectionClosed):
        for _ in range(20):
            await client.send_raw(media(client))
    await end_call(client)
    assert "Traceback" not in server_log()
