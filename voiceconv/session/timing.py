"""Time to first audio per turn: what the core measures, with times the I/O layer supplies.

The core reads no clock. It asks for the moments it times with
:class:`~voiceconv.session.actions.StampTime` actions; the I/O layer reads its monotonic clock
as it runs one and hands the time back (:meth:`CallSession.stamp`), which lands here:

- ``caller_stopped``: Realtime's ``input_audio_buffer.speech_stopped`` was received (on
  GPT-Live, which has no such event, a caller transcript fragment: the last one before the
  answer counts);
- ``audio_received``: the first audio delta of an assistant item was received;
- ``audio_sent``: that delta's ``media`` message has been sent to Twilio.

Only the first delta of an item is stamped (every other delta keeps the fast path, with no
clock read). Of an answer to the caller, the model's share is ``caller_stopped`` →
``audio_received`` and the bridge's ``audio_received`` → ``audio_sent``; they add up to the
answer's time to first audio. Every assistant item (the greeting too) gets the bridge's share.
"""

from __future__ import annotations

from collections.abc import Mapping

from voiceconv.session.actions import StampTime
from voiceconv.session.playback import AssistantItem

__all__ = ["TurnShares", "TurnTimer", "shares"]

#: (caller stopped → first audio sent, the model's share, the bridge's share), ms or None.
TurnShares = tuple[float | None, float | None, float | None]


class TurnTimer:
    """The clock readings of the call's turns (kept on their items)."""

    __slots__ = ("caller_stopped_at",)

    def __init__(self) -> None:
        #: When the caller last stopped speaking with no answer begun since (monotonic s).
        self.caller_stopped_at: float | None = None

    def reset(self) -> None:
        """A new speech session: a stop the old one heard is not answered by the new one."""
        self.caller_stopped_at = None

    def stamp(self, stamp: StampTime, at: float, items: Mapping[str, AssistantItem]) -> None:
        """The I/O layer ran ``stamp`` at ``at`` (seconds of its monotonic clock)."""
        if stamp.point == "caller_stopped":
            self.caller_stopped_at = at
            return
        item = items.get(stamp.item_id)
        if item is None:
            return
        if stamp.point == "audio_received":
            item.received_at = at
            if stamp.answer and self.caller_stopped_at is not None:
                item.stopped_at = self.caller_stopped_at
                self.caller_stopped_at = None
        elif item.received_at is not None and item.sent_at is None:
            item.sent_at = at


def _ms(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return round(max(0.0, end - start) * 1000, 2)


def shares(item: AssistantItem) -> TurnShares:
    """The item's (time to first audio, model's share, bridge's share) in ms (None: not
    measured; the first two only for an answer to the caller)."""
    return (
        _ms(item.stopped_at, item.sent_at),
        _ms(item.stopped_at, item.received_at),
        _ms(item.received_at, item.sent_at),
    )
