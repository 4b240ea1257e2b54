"""Command line of the stand-in: ``python -m voiceconv.testing.realtime_server``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import Any

from voiceconv.testing.realtime_server.script import ScriptedResponse
from voiceconv.testing.realtime_server.server import RealtimeStandIn
from voiceconv.testing.standin_cli import add_common_arguments, how_to_point, serve

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
    return await serve(
        standin, args, lambda: how_to_point(standin, "Realtime (GA protocol)"),
        lambda: _summary(standin),
    )


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
    add_common_arguments(parser)
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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m voiceconv.testing.realtime_server``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr)
    return asyncio.run(_main(args))
