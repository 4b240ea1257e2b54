"""Load generator: many simulated Twilio calls in one process, paced in real time.

``python -m bench.loadgen SPEC.json OUT.json`` reads the plan (which calls, where, when), prints
``ready``, reads the start time (``time.monotonic()`` value) from stdin, runs the calls and
writes what it sent and received with monotonic timestamps.

Each call is entered like Twilio does it: the signed incoming-call webhook (through
``TwilioStreamClient.from_webhook``, which parses the TwiML and signs the upgrade), then a
websocket with ``connected``/``start`` and one tagged 20 ms ``media`` frame every 20 ms of
wall time, speech bursts and silence alternating so that the stand-in's VAD fires. The app's
audio goes into a playback model (8 bytes per ms of wall time); ``mark``s are echoed when the
audio before them has played and at once on ``clear``, as Twilio does. The per-call client is
leaner than ``TwilioStreamClient`` (string-built JSON, one timer per frame, no per-message
records beyond what the benchmark matches on) so that one process can hold 100+ calls.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import sys
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bench.common import FRAME_BYTES, FRAME_MS, LoopLag, dumps, loads, tag_frame
from voiceconv.testing.audio import silence, speech_like
from voiceconv.testing.twilio_client import TwilioStreamClient, new_sid


@dataclass
class Plan:
    """What one generator process does (all times are ``time.monotonic()`` values)."""

    calls: list[int]
    mode: str  # "webhook" (our app) or "direct" (the reference relay: no webhook)
    http_url: str
    ws_url: str
    auth_token: str
    public_url: str
    ramp_s: float
    audio_s: float  # caller audio runs from the call's start for this long (after t0 + ramp)
    drain_s: float
    speech_ms: int = 600
    cycle_ms: int = 2600
    total_calls: int = 1
    seed: int = 0
    #: Each call sends at least this much audio after its stream started, however late it
    #: entered (the load test: a slow machine delays calls, it must not cut them short).
    min_audio_s: float = 0.0


@dataclass
class CallResult:
    """What one call saw."""

    index: int
    call_sid: str = ""
    started_at: float = 0.0
    webhook_sent_at: float = 0.0
    webhook_answered_at: float = 0.0  # 0: not answered (or no webhook: the reference relay)
    sent: list[float] = field(default_factory=list)  # send time of frame #counter
    received: list[tuple[float, int]] = field(default_factory=list)  # (time, crc32 of payload)
    clears: list[float] = field(default_factory=list)
    marks_received: int = 0
    marks_echoed: int = 0
    hangup_at: float = 0.0
    close_code: int | None = None
    error: str = ""


SPEECH = speech_like(600, seed=7)
SILENCE_FRAME = silence(FRAME_MS)


class Call:
    """One simulated call: a sender paced by absolute deadlines and a reader with playback."""

    def __init__(self, plan: Plan, index: int, t_start: float, t_audio_end: float) -> None:
        self.plan = plan
        self.index = index
        self.t_start = t_start
        self.t_audio_end = t_audio_end
        self.result = CallResult(index=index)
        rng = random.Random(plan.seed * 100_003 + index)
        self.phase_ms = rng.randrange(0, plan.cycle_ms, FRAME_MS)
        self.ws: Any = None
        self.stream_sid = new_sid("MZ")
        self.seq = 0
        # playback model: when the audio queued so far finishes playing, and pending marks
        self.play_end = 0.0
        self.marks: deque[tuple[float, str]] = deque()
        self._echoes: set[asyncio.Future[None]] = set()

    async def run(self) -> CallResult:
        r = self.result
        try:
            await self._sleep_until(self.t_start)
            await self._enter()
            if self.plan.min_audio_s:
                self.t_audio_end = max(self.t_audio_end,
                                       self.result.started_at + self.plan.min_audio_s)
            reader = asyncio.create_task(self._read())
            try:
                await self._send_audio()
                drain_end = time.monotonic() + self.plan.drain_s
                while time.monotonic() < drain_end and not reader.done():
                    self._echo_due(time.monotonic())
                    await asyncio.sleep(FRAME_MS / 1000)
                r.hangup_at = time.monotonic()
                with contextlib.suppress(ConnectionClosed):
                    await self._send_json(
                        f'{{"event":"stop","sequenceNumber":"{self._next_seq()}",'
                        f'"streamSid":"{self.stream_sid}","stop":'
                        f'{{"accountSid":"AC{"0" * 32}","callSid":"{r.call_sid}"}}}}'
                    )
                await self.ws.close()
            finally:
                await reader
            r.close_code = self.ws.close_code
        except Exception as exc:
            r.error = f"{type(exc).__name__}: {exc}"[:300]
            if self.ws is not None:
                with contextlib.suppress(Exception):
                    await self.ws.close()
        return r

    @staticmethod
    async def _sleep_until(t: float) -> None:
        delay = t - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    async def _send_json(self, text: str) -> None:
        await self.ws.send(text)

    async def _enter(self) -> None:
        plan = self.plan
        headers: list[tuple[str, str]] = []
        if plan.mode == "webhook":
            self.result.webhook_sent_at = time.monotonic()
            client = await TwilioStreamClient.from_webhook(
                plan.http_url,
                auth_token=plan.auth_token,
                public_url=plan.public_url,
                form={"From": "+14155550123", "To": "+14155550100"},
                timeout=60.0,
            )
            self.result.webhook_answered_at = time.monotonic()
            url, params = client.url, client.custom_parameters
            call_sid, account_sid = client.call_sid, client.account_sid
            headers = client.handshake_headers()
        else:
            url = plan.ws_url.rstrip("/") + "/twilio/stream/"
            params, call_sid, account_sid = {}, new_sid("CA"), new_sid("AC")
        self.result.call_sid = call_sid
        self.ws = await connect(
            url,
            additional_headers=headers,
            user_agent_header="Twilio.TmeWs/1.0",
            compression=None,
            max_size=None,
            proxy=None,
            ping_interval=None,
            open_timeout=30,
        )
        await self.ws.send('{"event":"connected","protocol":"Call","version":"1.0.0"}')
        start = {
            "event": "start",
            "sequenceNumber": str(self._next_seq()),
            "streamSid": self.stream_sid,
            "start": {
                "accountSid": account_sid,
                "streamSid": self.stream_sid,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": params,
            },
        }
        await self.ws.send(dumps(start).decode())
        self.result.started_at = time.monotonic()

    def _frame(self, k: int) -> bytes:
        pos = (k * FRAME_MS + self.phase_ms) % self.plan.cycle_ms
        if pos < self.plan.speech_ms:
            off = (pos // FRAME_MS) * FRAME_BYTES
            base = SPEECH[off : off + FRAME_BYTES]
        else:
            base = SILENCE_FRAME
        return tag_frame(base, self.index, k)

    async def _send_audio(self) -> None:
        prefix = '{"event":"media","sequenceNumber":"'
        mid = '","streamSid":"' + self.stream_sid + '","media":{"track":"inbound","chunk":"'
        sent = self.result.sent
        t0 = self.result.started_at
        k = 0
        while True:
            deadline = t0 + (k + 1) * FRAME_MS / 1000  # a frame leaves once it has been captured
            if deadline > self.t_audio_end:
                return
            await self._sleep_until(deadline)
            now = time.monotonic()
            self._echo_due(now)
            payload = base64.b64encode(self._frame(k)).decode("ascii")
            text = (
                f'{prefix}{self._next_seq()}{mid}{k + 1}","timestamp":"{k * FRAME_MS}",'
                f'"payload":"{payload}"}}}}'
            )
            sent.append(time.monotonic())
            await self.ws.send(text)
            k += 1

    def _echo_due(self, now: float) -> None:
        marks = self.marks
        while marks and marks[0][0] <= now:
            _, name = marks.popleft()
            self._echo(name)

    def _echo(self, name: str) -> None:
        self.result.marks_echoed += 1
        text = (
            f'{{"event":"mark","sequenceNumber":"{self._next_seq()}",'
            f'"streamSid":"{self.stream_sid}","mark":{{"name":"{name}"}}}}'
        )
        task = asyncio.ensure_future(self._send_quietly(text))
        self._echoes.add(task)
        task.add_done_callback(self._echoes.discard)

    async def _send_quietly(self, text: str) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(text)

    async def _read(self) -> None:
        r = self.result
        received = r.received
        try:
            async for raw in self.ws:
                now = time.monotonic()
                msg = loads(raw)
                event = msg.get("event")
                if event == "media":
                    payload = msg["media"]["payload"]
                    received.append((now, zlib.crc32(payload.encode("ascii"))))
                    n = len(payload) * 3 // 4 - payload.count("=", -2)
                    self.play_end = max(self.play_end, now) + n / 8000
                elif event == "mark":
                    r.marks_received += 1
                    name = msg["mark"]["name"]
                    if self.play_end <= now:
                        self._echo(name)
                    else:
                        self.marks.append((self.play_end, name))
                elif event == "clear":
                    r.clears.append(now)
                    self.play_end = now
                    while self.marks:
                        self._echo(self.marks.popleft()[1])
        except ConnectionClosed:
            pass


async def run_plan(plan: Plan, t0: float) -> dict[str, Any]:
    """Run every call of ``plan`` with the schedule anchored at ``t0``; results as JSON data."""
    # The webhook POST runs in a thread (urllib): enough of them that a burst of calls is
    # never queued on the load side (the default pool has cpu_count + 4 threads).
    from concurrent.futures import ThreadPoolExecutor

    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=min(128, len(plan.calls) + 4))
    )
    lag = LoopLag()
    lag.start()
    n = max(1, plan.total_calls)
    calls = []
    for index in plan.calls:
        t_start = t0 + plan.ramp_s * index / n
        t_audio_end = t0 + plan.ramp_s + plan.audio_s
        calls.append(Call(plan, index, t_start, t_audio_end))
    results = await asyncio.gather(*(c.run() for c in calls))
    await lag.stop()
    return {
        "calls": [r.__dict__ for r in results],
        "loop_lag": lag.samples,
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.loadgen SPEC OUT``."""
    args = sys.argv[1:] if argv is None else argv
    spec_path, out_path = args
    with open(spec_path, "rb") as fh:
        plan = Plan(**loads(fh.read()))
    print("ready", flush=True)
    t0 = float(sys.stdin.readline())
    data = asyncio.run(run_plan(plan, t0))
    with open(out_path, "wb") as fh:
        fh.write(dumps(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
