"""What the stand-ins' command lines share: common options and serving until SIGTERM.

``python -m voiceconv.testing.realtime_server`` and ``python -m voiceconv.testing.live_server``
each build their stand-in from their own options, then :func:`serve` it: the base URL alone
on the first line (for scripts that read it), how to point a voiceconv server at it, then
serving until SIGTERM or Ctrl-C, and on exit an optional JSON summary of every session.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

from voiceconv.testing.listener import StandInListener

__all__ = [
    "add_common_arguments",
    "add_script_arguments",
    "how_to_point",
    "listener_options",
    "read_script",
    "run",
    "serve",
]

T = TypeVar("T")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every stand-in command has."""
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


def add_script_arguments(
    parser: argparse.ArgumentParser, noun: str, default_text: str, example: str = ""
) -> None:
    """``--<noun>-text``, ``--<noun>-audio-ms`` and ``--<noun>s FILE``: the scripted model."""
    parser.add_argument(
        f"--{noun}-text",
        default=default_text,
        help=f"what every {noun} says when --{noun}s is used up (default: %(default)r)",
    )
    parser.add_argument(
        f"--{noun}-audio-ms",
        type=int,
        default=None,
        help=f"audio length of each {noun} (default: 60 ms per character)",
    )
    parser.add_argument(
        f"--{noun}s",
        default=None,
        help=f"JSON file with a list of scripted {noun}s, said in order{example}",
    )


def listener_options(args: argparse.Namespace) -> dict[str, Any]:
    """The common options as stand-in keyword arguments."""
    return {
        "host": args.host,
        "port": args.port,
        "api_key": args.api_key,
        "refuse_status": args.refuse_status,
        "caller_transcripts": args.caller_transcript or (),
    }


def read_script(path: str | None, build: Callable[[Mapping[str, Any]], T]) -> list[T]:
    """The scripted items of a ``--responses`` / ``--answers`` JSON file (none without one)."""
    if not path:
        return []
    with open(path, encoding="utf-8") as fh:
        return [build(entry) for entry in json.load(fh)]


def run(
    parser: argparse.ArgumentParser, argv: list[str] | None,
    main: Callable[[argparse.Namespace], Coroutine[Any, Any, int]],
) -> int:
    """Parse ``argv``, set up the stand-in's log on stderr, run ``main(args)``."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr)
    return asyncio.run(main(args))


def how_to_point(standin: StandInListener[Any], what: str) -> str:
    """The lines that tell how to point a voiceconv server at ``standin``."""
    key = standin.api_key or "sk-anything"
    return (
        f"{what} stand-in listening on {standin.ws_url}{standin.path.removeprefix('/v1')}.\n"
        "Point a voiceconv server at it (the openai SDK reads both variables):\n"
        f"  OPENAI_BASE_URL={standin.base_url} OPENAI_API_KEY={key} "
        "uv run python manage.py runserver\n"
        "Stop it with Ctrl-C or SIGTERM."
    )


async def serve(
    standin: StandInListener[Any],
    args: argparse.Namespace,
    guide: Callable[[], str],
    summary: Callable[[Any], dict[str, Any]],
) -> int:
    """Start ``standin``, print its base URL (and ``guide()`` unless ``--quiet``), serve until
    SIGTERM or SIGINT, stop at once, then write each session's ``summary(session)`` to
    ``--record``."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await standin.start()
    try:
        print(standin.base_url, flush=True)
        if not args.quiet:
            print(guide(), flush=True)
        await stop.wait()
    finally:
        # Stop at once: open sockets get a close frame, and no one waits for their answer.
        await standin.stop(close_timeout=0.5)
    if args.record:
        with open(args.record, "w", encoding="utf-8") as fh:
            json.dump([summary(session) for session in standin.sessions], fh, indent=1)
    return 0
