"""What the Twilio client records of a call: Twilio's numbers, sids and the app's messages."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

from voiceconv.testing.audio import BYTES_PER_MS, FRAME_BYTES

__all__ = [
    "APP_EVENTS",
    "FRAME_MS",
    "MAX_BUFFER_BYTES",
    "TWILIO_USER_AGENT",
    "Chunk",
    "ClearRecord",
    "MarkRecord",
    "MediaRecord",
    "TwilioWebhookError",
    "Violation",
    "new_sid",
]

FRAME_MS = FRAME_BYTES // BYTES_PER_MS
#: Twilio discards outbound audio beyond 10 minutes of buffer (warning 31931).
MAX_BUFFER_BYTES = 10 * 60 * 1000 * BYTES_PER_MS
#: User-Agent Twilio's media servers send on the upgrade.
TWILIO_USER_AGENT = "Twilio.TmeWs/1.0"

#: The messages the app may send and the key of each one's body.
APP_EVENTS = {"media": "media", "mark": "mark", "clear": None}


def new_sid(prefix: str) -> str:
    """A realistic Twilio sid: two-letter ``prefix`` + 32 lowercase hex digits."""
    return prefix + secrets.token_hex(16)


class TwilioWebhookError(RuntimeError):
    """The incoming-call webhook did not answer with usable ``<Connect><Stream>`` TwiML."""


@dataclass
class Violation:
    """A message from the app that Twilio would ignore and flag in its debugger.

    ``code`` is Twilio's: 31950 undecodable (binary) message, 31951 invalid message (not JSON,
    unknown type, missing/extra field, wrong streamSid), 31931 playback buffer overflow.
    """

    code: int
    reason: str
    raw: str | bytes
    at: float = field(default_factory=time.monotonic)


@dataclass
class MediaRecord:
    """One ``media`` message received from the app and what became of its audio."""

    index: int
    at: float
    payload: str
    size: int
    call_ms: float
    played: int = 0
    dropped: int = 0
    next_mark: str | None = None

    @property
    def played_ms(self) -> float:
        """Milliseconds of this message's audio that were played."""
        return self.played / BYTES_PER_MS


@dataclass
class MarkRecord:
    """One ``mark`` received from the app, and when it was echoed back."""

    name: str
    received_at: float
    received_call_ms: float
    echoed_at: float | None = None
    echo_call_ms: float | None = None
    heard_bytes: int | None = None
    cleared: bool = False

    @property
    def echoed(self) -> bool:
        """Whether the mark has been echoed back to the app."""
        return self.echoed_at is not None


@dataclass
class ClearRecord:
    """One ``clear`` received from the app: what had been heard and what was dropped.

    ``run_received``/``run_played`` count the bytes of media received since the previous clear
    (the current "run" of assistant audio) and how many of them the caller actually heard.
    """

    at: float
    call_ms: float
    heard_bytes: int
    dropped_bytes: int
    run_received: int
    run_played: int
    flushed_marks: list[str]

    @property
    def run_played_ms(self) -> float:
        """Milliseconds of the current run the caller heard before the clear."""
        return self.run_played / BYTES_PER_MS


@dataclass
class Chunk:
    """Received audio not yet played, in the playback FIFO."""

    record: MediaRecord
    data: bytes
    offset: int = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.offset
