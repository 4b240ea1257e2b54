"""The calls in progress in this process.

The media-stream consumer adds itself when its stream starts and leaves when it ends; the
incoming-call view reads :func:`count` for ``MAX_CONCURRENT_CALLS``, and graceful shutdown
walks :data:`LIVE`. A call that has ended but is still being finished (its last transcripts
awaited, its records handed to the writer) is in :data:`ENDING` until it is done: a drain waits
for those too (:func:`unfinished`), or SIGTERM would stop the server in the middle of them. A
module of its own, so that the views need not import the consumer.
"""

from __future__ import annotations

from typing import Any

#: The live calls' consumers (``MediaStreamConsumer.live`` is this very set).
LIVE: set[Any] = set()


def count() -> int:
    """Calls in progress in this process."""
    return len(LIVE)


#: Calls that have left :data:`LIVE` but whose ending is still under way.
ENDING: set[Any] = set()


def unfinished() -> int:
    """Calls in progress or still being finished: what a drain waits for."""
    return len(LIVE | ENDING)


def group_name(call_sid: str) -> str:
    """The channel-layer group of a live call, through which any process can reach it."""
    return "voiceconv.call." + "".join(c for c in call_sid if c.isalnum())[:80]
