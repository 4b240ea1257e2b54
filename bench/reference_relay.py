"""The floor: a bare ``websockets`` relay between Twilio Media Streams and the Realtime API.

No framework, no SDK, no database, no features: per Twilio frame one parse, one string build,
one send; per Realtime audio delta one parse and two sends (media and mark, as the app does);
``speech_started`` becomes a ``clear``. It stands for the cheapest Python can bridge a call with
the same libraries, so the benchmark can show what the app's features cost on top.

``python -m bench.reference_relay --port 8001 --openai-url ws://127.0.0.1:8765/v1``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import ssl
import sys
from typing import Any

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

try:
    import orjson

    loads = orjson.loads

    def dumps(obj: Any) -> str:
        """JSON text of ``obj``."""
        return orjson.dumps(obj).decode()
except ImportError:  # pragma: no cover - orjson is a dev dependency
    import json

    loads = json.loads

    def dumps(obj: Any) -> str:
        """JSON text of ``obj``."""
        return json.dumps(obj, separators=(",", ":"))


SESSION = {
    "type": "realtime",
    "output_modalities": ["audio"],
    "instructions": "You are a friendly, concise phone assistant.",
    "audio": {
        "input": {
            "format": {"type": "audio/pcmu"},
            "turn_detection": {"type": "server_vad", "create_response": True,
                               "interrupt_response": True},
        },
        "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"},
    },
}


async def relay(twilio: ServerConnection, openai_url: str, api_key: str,
                ssl_context: ssl.SSLContext | None) -> None:
    """Bridge one Twilio stream to one Realtime session until either side closes."""
    stream_sid = ""
    async for raw in twilio:  # connected, then start
        msg = loads(raw)
        if msg.get("event") == "start":
            stream_sid = msg["streamSid"]
            break
    if not stream_sid:
        return
    url = openai_url.rstrip("/") + "/realtime?model=gpt-realtime-2.1"
    async with connect(url, additional_headers={"Authorization": f"Bearer {api_key}"},
                       compression=None, max_size=None, ping_interval=None,
                       ssl=ssl_context) as openai:
        await openai.send(dumps({"type": "session.update", "session": SESSION}))
        await openai.send(dumps({"type": "response.create", "response": {
            "instructions": "Greet the caller briefly and ask how you can help."}}))
        media_prefix = '{"event":"media","streamSid":"' + stream_sid + '","media":{"payload":"'
        mark_prefix = '{"event":"mark","streamSid":"' + stream_sid + '","mark":{"name":"'
        clear = '{"event":"clear","streamSid":"' + stream_sid + '"}'

        async def upstream() -> None:
            async for raw in twilio:
                msg = loads(raw)
                if msg["event"] == "media":
                    await openai.send('{"type":"input_audio_buffer.append","audio":"'
                                      + msg["media"]["payload"] + '"}')
                elif msg["event"] == "stop":
                    return

        async def downstream() -> None:
            seq = 0
            async for raw in openai:
                event = loads(raw)
                kind = event["type"]
                if kind == "response.output_audio.delta":
                    seq += 1
                    await twilio.send(media_prefix + event["delta"] + '"}}')
                    await twilio.send(mark_prefix + str(seq) + '"}}')
                elif kind == "input_audio_buffer.speech_started":
                    await twilio.send(clear)

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        with contextlib.suppress(ConnectionClosed):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _main(args: argparse.Namespace) -> int:
    context = None
    if args.openai_url.startswith("wss://") and args.cafile:
        context = ssl.create_default_context(cafile=args.cafile)

    async def handler(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            await relay(ws, args.openai_url, args.api_key, context)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with serve(handler, "127.0.0.1", args.port, compression=None, max_size=None,
                     ping_interval=None):
        await stop.wait()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.reference_relay``."""
    parser = argparse.ArgumentParser(description="Bare websockets Twilio ⇄ Realtime relay.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--openai-url", required=True, help="ws(s)://host:port/v1")
    parser.add_argument("--api-key", default="sk-bench")
    parser.add_argument("--cafile", help="CA bundle for a wss:// stand-in")
    return asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
