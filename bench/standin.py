"""The Realtime stand-in as a benchmark process that reports what it saw and when.

``python -m bench.standin --port N --out FILE`` serves :class:`RealtimeStandIn` (non-strict:
no pydantic validation per event, so the stand-in stays cheap), prints its base URL once
listening, and on SIGTERM writes JSON: for every session the receipt time and tag of every
``append`` and, in wire order, the send time of every audio delta (with its response id and
a CRC of its payload), ``speech_started`` and ``response.created``; plus its own loop lag.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import math
import signal
import ssl
import sys
import time
import zlib
from array import array
from typing import Any

from bench.common import LoopLag, dumps, read_tag, tag_frame
from voiceconv.testing.audio import speech_like, ulaw_decode
from voiceconv.testing.realtime_server import RealtimeStandIn, ScriptedResponse, StandInSession
from voiceconv.testing.realtime_server.protocol import _tables

_APPEND_PREFIX = '{"type":"input_audio_buffer.append","audio":"'
# μ-law byte -> squared linear sample, for a VAD energy that costs one C-level sum per window.
_REPLY_POOL = speech_like(3000, seed=11)
_SQUARES = tuple(v * v for v in array("h", ulaw_decode(bytes(range(256)))))


class BenchSession(StandInSession):
    """A stand-in session that timestamps the events the benchmark matches on, as sent.

    ``append`` events in the exact shape the bridges send take a fast path (no JSON parse, a
    table-driven VAD energy) so that the stand-in is not the bottleneck at 100+ calls; every
    other event goes through the stand-in's full handling.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: ``(monotonic send time, kind, response id, crc32 of the delta)``; kind is
        #: ``d`` (audio delta), ``s`` (speech_started) or ``c`` (response.created).
        self.timeline: list[tuple[float, str, str, int]] = []

    async def _on_message(self, message: str | bytes) -> None:
        if (
            isinstance(message, str)
            and message.startswith(_APPEND_PREFIX)
            and message.endswith('"}')
            and '"' not in message[len(_APPEND_PREFIX) : -2]
        ):
            audio = message[len(_APPEND_PREFIX) : -2]
            self.appends.append((time.monotonic(), audio))
            try:
                raw = base64.b64decode(audio, validate=True)
            except (binascii.Error, ValueError):
                self.protocol_violations.append("client: append with invalid base64")
                return
            await self._feed_vad(raw)
            return
        await super()._on_message(message)

    def _audio_chunk(self, ms: int, seed: int, bpm: int) -> bytes:
        # Precomputed speech with the seed written into its first bytes: unique per chunk
        # within a session (the benchmark matches deltas by content), at no synthesis cost.
        if bpm != 8 or ms * 8 > len(_REPLY_POOL) - 8000:
            return super()._audio_chunk(ms, seed, bpm)
        offset = (seed * 1608) % 8000
        chunk = _REPLY_POOL[offset : offset + ms * 8]
        return tag_frame(chunk, (seed >> 24) % 65535, seed & 0xFFFFFF)

    def _energy(self, chunk: bytes) -> float:
        if self._input_bytes_per_ms == 48:
            return super()._energy(chunk)
        sample = chunk[::4]  # every 4th sample is plenty to tell speech from silence
        return math.sqrt(sum(map(_SQUARES.__getitem__, sample)) / len(sample)) / 32768.0

    def _on_sent(self, event: dict[str, Any], at: float) -> None:
        # Instead of the stand-in's own recording (whole deltas): a tag per event, lean at 150+.
        kind = event["type"]
        if kind == "response.output_audio.delta":
            crc = zlib.crc32(event["delta"].encode("ascii"))
            self.timeline.append((at, "d", event["response_id"], crc))
        elif kind == "input_audio_buffer.speech_started":
            self.timeline.append((at, "s", "", 0))
        elif kind == "response.created":
            self.timeline.append((at, "c", event["response"]["id"], 0))


class BenchStandIn(RealtimeStandIn):
    """:class:`RealtimeStandIn` whose sessions are :class:`BenchSession`."""

    session_class = BenchSession


def summarize(standin: BenchStandIn, lag: LoopLag) -> dict[str, Any]:
    """What the benchmark needs from the stand-in, decoded (tags instead of payloads)."""
    sessions = []
    for s in standin.sessions:
        assert isinstance(s, BenchSession)
        appends = []
        untagged = 0
        for t, b64 in s.appends:
            tag = read_tag(b64) if isinstance(b64, str) else None
            if tag is None:
                untagged += 1
                continue
            appends.append((t, tag[0], tag[1]))
        sessions.append(
            {
                "opened_at": s.opened_at,
                "appends": appends,
                "untagged_appends": untagged,
                "timeline": s.timeline,
                "truncates": len(s.truncates),
                "errors": [e["error"].get("code") for e in s.errors],
            }
        )
    return {"sessions": sessions, "loop_lag": lag.samples}


async def _main(args: argparse.Namespace) -> int:
    context = None
    if args.certfile:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.certfile, args.keyfile)
    standin = BenchStandIn(
        port=args.port,
        speed_factor=args.speed_factor,
        strict=False,
        default_response=ScriptedResponse(text=args.response_text, audio_ms=args.audio_ms),
        ssl_context=context,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    _tables()  # build the SDK's event tables now, not in the middle of the first call
    lag = LoopLag()
    async with standin:
        lag.start()
        print(standin.base_url, flush=True)
        await stop.wait()
        await lag.stop()
        data = summarize(standin, lag)
    with open(args.out, "wb") as fh:
        fh.write(dumps(data))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.standin``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--speed-factor", type=float, default=5.0)
    parser.add_argument("--audio-ms", type=int, default=4000)
    parser.add_argument(
        "--response-text", default="Sure, let me check that for you. One moment please."
    )
    parser.add_argument("--certfile", help="serve wss:// with this certificate (PEM)")
    parser.add_argument("--keyfile", help="its private key (PEM)")
    return asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
