"""Command line of the stand-in: ``python -m voiceconv.testing.realtime_server``."""

from __future__ import annotations

import argparse
from typing import Any

from voiceconv.testing.realtime_server.script import ScriptedResponse
from voiceconv.testing.realtime_server.server import RealtimeStandIn
from voiceconv.testing.realtime_server.session import StandInSession
from voiceconv.testing.standin_cli import (
    add_common_arguments,
    add_script_arguments,
    how_to_point,
    listener_options,
    read_script,
    run,
    serve,
)

__all__ = ["main"]


def _summary(s: StandInSession) -> dict[str, Any]:
    """What ``--record`` keeps of one session."""
    return {
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


async def _main(args: argparse.Namespace) -> int:
    standin = RealtimeStandIn(
        **listener_options(args),
        speed_factor=args.speed_factor,
        session_lifetime_s=args.session_lifetime_s,
        responses=read_script(args.responses, ScriptedResponse.from_dict),
        default_response=ScriptedResponse(
            text=args.response_text, audio_ms=args.response_audio_ms),
    )
    return await serve(
        standin, args, lambda: how_to_point(standin, "Realtime (GA protocol)"),
        _summary,
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
    add_script_arguments(parser, "response", ScriptedResponse.text, " (ScriptedResponse fields)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m voiceconv.testing.realtime_server``."""
    return run(build_parser(), argv, _main)
