"""Command line of the GPT-Live stand-in: ``python -m voiceconv.testing.live_server``."""

from __future__ import annotations

import argparse
from typing import Any

from voiceconv.testing.live_server.script import ScriptedLiveAnswer
from voiceconv.testing.live_server.server import GPTLiveStandIn
from voiceconv.testing.live_server.session import LiveStandInSession
from voiceconv.testing.standin_cli import (
    add_common_arguments,
    add_script_arguments,
    how_to_point,
    listener_options,
    read_script,
    run,
    serve,
)

__all__ = ["build_parser", "main"]


def _summary(s: LiveStandInSession) -> dict[str, Any]:
    """What ``--record`` keeps of one session."""
    return {
        "model": (s.config or {}).get("model"),
        "received": [e.get("type") for e in s.received],
        "input_ms": s.now_ms,
        "output_ms": len(s.output_audio) // 8,
        "sent": [e.get("type") for e in s.sent],
        "commentary": s.commentary,
        "tool_outputs": s.tool_outputs,
        "delegation_replies": s.delegation_replies,
        "fixtures": s.fixtures,
        "interruptions": s.interruptions,
        "protocol_violations": s.protocol_violations,
    }


async def _main(args: argparse.Namespace) -> int:
    standin = GPTLiveStandIn(
        **listener_options(args),
        lead_ms=args.lead_ms,
        transcript_delay_ms=args.transcript_delay_ms,
        answers=read_script(args.answers, ScriptedLiveAnswer.from_dict),
        default_answer=ScriptedLiveAnswer(text=args.answer_text, audio_ms=args.answer_audio_ms),
        start_error=args.start_error,
    )
    return await serve(
        standin, args, lambda: how_to_point(standin, "GPT-Live"), _summary)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m voiceconv.testing.live_server``."""
    parser = argparse.ArgumentParser(
        prog="python -m voiceconv.testing.live_server",
        description=(
            "A local stand-in for OpenAI's GPT-Live API (/v1/live/sessions, WebSocket) for "
            "development and tests: scripted answers, delegations, timed transcript fragments, "
            "audio fixtures and faults, output paced in real time, every event checked against "
            "openai.types.live. Prints its base URL, then how to point a server at it."
        ),
    )
    add_common_arguments(parser)
    parser.add_argument(
        "--lead-ms",
        type=int,
        default=1000,
        help="how far ahead of real time output audio is streamed (default: %(default)s)",
    )
    parser.add_argument(
        "--transcript-delay-ms",
        type=int,
        default=200,
        help="how far into the caller's speech its first word is transcribed "
        "(default: %(default)s)",
    )
    add_script_arguments(
        parser, "answer", ScriptedLiveAnswer.text,
        ' (ScriptedLiveAnswer fields, e.g. [{"text": "Hi"}, {"delegate": {"name": "get_time"}},'
        ' {"fragments": [{"delta": "One", "start_ms": 0, "end_ms": 300}]},'
        ' {"fail_with": "server_error"}])',
    )
    parser.add_argument(
        "--start-error",
        default=None,
        help="answer every session.start with this error code and close (a fault)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m voiceconv.testing.live_server``."""
    return run(build_parser(), argv, _main)
