"""One logger adapter for everything that logs about a call.

The consumer, the recorder and the tool runtime log through :class:`CallLog`, so every line
about a call starts ``call <CallSid>:`` and its record carries ``call_sid`` (for a log
formatter or filter that wants it as a field)::

    log = CallLog(logging.getLogger("voiceconv.consumers"), call_sid)
    log.warning("bad media payload")   # "call CA123…: bad media payload"
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

__all__ = ["CallLog"]


class CallLog(logging.LoggerAdapter[logging.Logger]):
    """``logger`` with ``call <sid>: `` in front of every message and ``call_sid`` on the record."""

    def __init__(self, logger: logging.Logger, call_sid: str = "") -> None:
        super().__init__(logger, {"call_sid": call_sid or "?"})
        self.call_sid = call_sid or "?"

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = kwargs.get("extra")
        kwargs["extra"] = {"call_sid": self.call_sid, **(extra or {})}
        return f"call {self.call_sid}: {msg}", kwargs
