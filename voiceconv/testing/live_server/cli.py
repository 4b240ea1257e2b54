"""Command line of the GPT-Live stand-in: ``python -m voiceconv.testing.live_server``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import Any

from voiceconv.testing.live_server.script import ScriptedLiveAnswer
from voiceconv.testing.live_server.server import GPTLiveStandIn
from voiceconv.testing.standin_cli import add_common_arguments, how_to_point, serve

__all__ = ["build_parser", "main"]


def _summary(standin: GPTLiveStandIn) -> list[dict[str, Any]]:
    return [
        {
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
        for s in standin.sessions
    ]


async def _main(args: argparse.Namespace) -> int:
    answers: list[ScriptedLiveAnswer] = []
    if args.answers:
        with open(args.answers, encoding="utf-8") as fh:
            answers = [ScriptedLiveAnswer.from_dict(entry) for entry in json.load(fh)]
    standin = GPTLiveStandIn(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        refuse_status=args.refuse_status,
        lead_ms=args.lead_ms,
        transcript_delay_ms=args.transcript_delay_ms,
        answers=answers,
        default_answer=ScriptedLiveAnswer(text=args.answer_text, audio_ms=args.answer_audio_ms),
        caller_transcripts=args.caller_transcript or (),
        start_error=args.start_error,
    )
    return await serve(
        standin, args, lambda: how_to_point(standin, "GPT-Live"), lambda: _summary(standin))


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
    parser.add_argument(
        "--answer-text",
        default=ScriptedLiveAnswer.text,
        help="what every answer says when --answers is used up (default: %(default)r)",
    )
    parser.add_argument(
        "--answer-audio-ms",
        type=int,
        default=None,
        help="audio length of each answer (default: 60 ms per character)",
    )
    parser.add_argument(
        "--answers",
        default=None,
        help="JSON file with a list of ScriptedLiveAnswer objects, answered in order "
        '(e.g. [{"text": "Hi"}, {"delegate": {"name": "get_time"}}, '
        '{"fragments": [{"delta": "One", "start_ms": 0, "end_ms": 300}]}, '
        '{"fail_with": "server_error"}])',
    )
    parser.add_argument(
        "--start-error",
        default=None,
        help="answer every session.start with this error code and close (a fault)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m voiceconv.testing.live_server``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr)
    return asyncio.run(_main(args))
