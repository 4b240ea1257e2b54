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
import signal
from collections.abc import Callable
from typing import Any

from voiceconv.testing.listener import StandInListener

__all__ = ["add_common_arguments", "how_to_point", "serve"]


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
    summary: Callable[[], list[dict[str, Any]]],
) -> int:
    """Start ``standin``, print its base URL (and ``guide()`` unless ``--quiet``), serve until
    SIGTERM or SIGINT, stop at once, then write ``summary()`` to ``--record``."""
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
            json.dump(summary(), fh, indent=1)
    return 0
