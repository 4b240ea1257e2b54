"""Command line of the stand-in: ``python -m voiceconv.testing.realtime_server``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from typing import Any

from voiceconv.testing.realtime_server.script import ScriptedResponse
from voiceconv.testing.realtime_server.server import RealtimeStandIn

__all__ = ["main"]


def _summary(standin: RealtimeStandIn) -> list[dict[str, Any]]:
    return [
        {
            "model": s.model,
            "received": [e.get("type") for e in s.received],
            "appends": len(s.appends),
            "input_ms": s.input_ms,
            "sent": s.sent_types(),
            "errors": [e["error"] for e in s.errors],
            "truncates": s.truncates,
            "response_requests": s.response_requests,
            "protocol_violations": s.protocol_violations,
            "close_code": s.close_code,
        }
        for s in standin.sessions
    ]


def _how_to_point(standin: RealtimeStandIn) -> str:
    key = standin.api_key or "sk-anything"
    return (
        f"Realtime stand-in listening on {standin.ws_url}/realtime (GA protocol).\n"
        "Point a voiceconv server at it (the openai SDK reads both variables):\n"
        f"  OPENAI_BASE_URL={standin.base_url} OPENAI_API_KEY={key} "
        "uv run python manage.py runserver\n"
        "Stop it with Ctrl-C or SIGTERM."
    )


async def _main(args: argparse.Namespace) -> int:
    responses: list[ScriptedResponse] = []
    if args.responses:
        with open(args.responses, encoding="utf-8") as fh:
            responses = [ScriptedResponse.from_dict(entry) for entry in json.load(fh)]
    default = ScriptedResponse(text=args.response_text, audio_ms=args.response_audio_ms)
    standin = RealtimeStandIn(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        refuse_status=args.refuse_status,
        speed_factor=args.speed_factor,
        session_lifetime_s=args.session_lifetime_s,
        responses=responses,
        default_response=default,
        caller_transcripts=args.caller_transcript or (),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await standin.start()
    try:
        # The first line is the base URL alone, for scripts that read it.
        print(standin.base_url, flush=True)
        if not args.quiet:
            print(_how_to_point(standin), flush=True)
        await stop.wait()
    finally:
        # Stop at once: open sockets get a close frame, and no one waits for their answer.
        await standin.stop(close_timeout=0.5)
    if args.record:
        with open(args.record, "w", encoding="utf-8") as fh:
            json.dump(_summary(standin), fh, indent=1)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m voiceconv.testing.realtime_server``."""
    parser = argparse.ArgumentParser(
        prog="python -m voiceconv.testing.realtime_server",
        description=(
            "A local stand-in for the OpenAI Realtime API (GA protocol, WebSocket) for "
            "development and tests: scripted answers, energy VAD, every event checked against "
            "the openai SDK's types. Prints its base URL, then how to point a server at it."
        ),
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=0, help="port to listen on (0 picks a free one)"
    )
    parser.add_argument(
        "--api-key",
        default=None,
        help="accept only this bearer key (default: any non-empty key)",
    )
    parser.add_argument(
        "--refuse-status",
        type=int,
        default=None,
        help="refuse every connection with this HTTP status (e.g. 429, 500)",
    )
    parser.add_argument(
        "--speed-factor",
        type=float,
        default=5.0,
        help="how many times faster than real time answers are streamed (default: %(default)s)",
    )
    parser.add_argument(
        "--session-lifetime-s",
        type=float,
        default=None,
        help="end each session with session_expired after this many seconds "
        "(the live service: 3600; default: never)",
    )
    parser.add_argument(
        "--response-text",
        default=ScriptedResponse.text,
        help="what every answer says when --responses is used up (default: %(default)r)",
    )
    parser.add_argument(
        "--response-audio-ms",
        type=int,
        default=None,
        help="audio length of each answer (default: 60 ms per character)",
    )
    parser.add_argument(
        "--responses",
        default=None,
        help="JSON file with a list of ScriptedResponse objects, answered in order",
    )
    parser.add_argument(
        "--caller-transcript",
        action="append",
        default=None,
        help="transcript of the caller's next turn (repeat for later turns)",
    )
    parser.add_argument(
        "--record",
        default=None,
        help="on exit, write a JSON summary of every session to this file",
    )
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="level of the stand-in's own log on stderr (default: %(default)s)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="print only the base URL, not how to point a server at it",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m voiceconv.testing.realtime_server``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr)
    return asyncio.run(_main(args))
