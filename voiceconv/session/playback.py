"""Marks and heard-audio maths: what of the assistant's audio the caller has heard.

Every assistant audio chunk sent to Twilio is followed by a uniquely numbered ``mark``; an echo
proves the audio before it was played (``docs/protocols.md`` §T4). Between echoes, call time
(Twilio's ``media.timestamp``) refines the estimate, capped by the next mark. Nothing here
builds messages: :class:`Playback` only counts bytes (8 bytes of μ-law = 1 ms).
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass


@dataclass(slots=True)
class AssistantItem:
    """An assistant audio item and what of it has been sent and played."""

    item_id: str
    response_id: str
    #: Bytes of μ-law sent to Twilio (8 bytes = 1 ms).
    sent: int = 0
    #: Bytes proven played by mark echoes.
    acked: int = 0
    #: Call time (ms) at which ``acked`` last advanced, or playback of this item began.
    acked_at_ms: int | None = None
    #: Call time of the first chunk sent.
    first_sent_ms: int | None = None
    transcript: str = ""
    transcript_done: bool = False
    audio_done: bool = False
    interrupted: bool = False
    heard_ms: int | None = None
    recorded: bool = False
    latency_ms: int | None = None
    #: Monotonic clock (s, from the I/O layer; :mod:`~voiceconv.session.timing`): the caller
    #: stopped speaking before this answer, its first delta arrived, that delta was sent.
    stopped_at: float | None = None
    received_at: float | None = None
    sent_at: float | None = None
    #: Deltas dropped after an interruption (audio the caller never got).
    dropped: bool = False
    truncated: bool = False
    #: Put into the history (as heard so far) for a new Realtime session after a drop.
    reseeded: bool = False


@dataclass(slots=True)
class Pending:
    """A mark sent to Twilio and not echoed yet."""

    seq: int
    item: AssistantItem
    end: int  # item bytes sent up to this mark


class Playback:
    """The assistant items of the call and the marks queued at Twilio, in play order."""

    def __init__(self) -> None:
        self.seq = 0
        self.pending: deque[Pending] = deque()
        self.items: dict[str, AssistantItem] = {}

    def item(self, item_id: str, response_id: str) -> AssistantItem:
        """The item ``item_id``, created on first sight."""
        item = self.items.get(item_id)
        if item is None:
            item = AssistantItem(item_id=item_id, response_id=response_id)
            self.items[item_id] = item
        return item

    def playing(self) -> bool:
        """Audio sent to Twilio has not all been proven played."""
        return bool(self.pending)

    def still_playing(self, item: AssistantItem) -> bool:
        return any(p.item is item for p in self.pending)

    def last_sent(self) -> AssistantItem | None:
        return self.pending[-1].item if self.pending else None

    def sent(self, item: AssistantItem, nbytes: int, now_ms: int) -> int:
        """``nbytes`` of ``item`` were sent to Twilio; return the number of the mark after them."""
        if item.first_sent_ms is None:
            item.first_sent_ms = now_ms
        if not self.pending:
            item.acked_at_ms = now_ms  # playback of this chunk starts now
        item.sent += nbytes
        self.seq += 1
        self.pending.append(Pending(self.seq, item, item.sent))
        return self.seq

    def echo(self, seq: int, now_ms: int) -> list[AssistantItem] | None:
        """Mark ``seq`` came back; return the items it finished (None: stale or duplicate)."""
        pending = self.pending
        if not pending or seq < pending[0].seq:
            return None  # an echo flushed by clear, or a duplicate
        done: list[AssistantItem] = []
        while pending and pending[0].seq <= seq:
            p = pending.popleft()
            item = p.item
            item.acked = p.end
            item.acked_at_ms = now_ms
            if not pending or pending[0].item is not item:
                done.append(item)
        if pending:
            nxt = pending[0].item
            if nxt.acked == 0:
                nxt.acked_at_ms = now_ms
        return done

    def heard_bytes(self, item: AssistantItem, now_ms: int) -> int:
        """Bytes of ``item`` the caller has heard by ``now_ms`` (the queue is left alone)."""
        for i, p in enumerate(self.pending):
            if p.item is item:
                if i:
                    return item.acked  # queued behind another item: not playing yet
                since = item.acked_at_ms if item.acked_at_ms is not None else now_ms
                return min(item.acked + max(0, now_ms - since) * 8, p.end)
        return item.sent  # nothing of it queued: all played

    def cut(self, now_ms: int) -> list[tuple[AssistantItem, int]]:
        """Twilio is told to clear: each queued item with the bytes of it the caller heard.

        The item at the head heard what its echoes prove plus the call time since (capped by its
        next mark); the items queued behind it heard nothing. The queue is empty afterwards.
        """
        if not self.pending:
            return []
        head = self.pending[0]
        item = head.item
        since = item.acked_at_ms if item.acked_at_ms is not None else now_ms
        played = min(item.acked + max(0, now_ms - since) * 8, head.end, item.sent)
        seen: list[AssistantItem] = []
        for p in self.pending:
            if not seen or seen[-1] is not p.item:
                seen.append(p.item)
        self.pending.clear()
        return [(it, played if i == 0 else 0) for i, it in enumerate(seen)]

    def settle(self, now_ms: int) -> None:
        """The call is over: every queued item counts as heard up to now, the queue empties."""
        for p in self.pending:
            item = p.item
            if not item.recorded and item.heard_ms is None:
                since = item.acked_at_ms if item.acked_at_ms is not None else now_ms
                played = min(item.acked + max(0, now_ms - since) * 8, p.end)
                item.heard_ms = played // 8
                item.interrupted = item.heard_ms < item.sent // 8
        self.pending.clear()


_WORD = re.compile(r"\S+")


def estimate_heard(text: str, heard_ms: int | None, total_ms: int | None) -> str:
    """The prefix of ``text`` the caller heard after ``heard_ms`` of ``total_ms`` of audio.

    Speech is assumed to advance evenly through the characters of ``text``. A word (a run of
    non-space characters, punctuation included) counts as heard when its middle was played,
    so the result always ends on a word boundary: never mid-word, never with trailing space.
    ``heard_ms <= 0`` gives ``""``; ``heard_ms >= total_ms`` (or an unknown total) gives the
    whole text.
    """
    if not text:
        return ""
    heard = heard_ms or 0
    if heard <= 0:
        return ""
    if not total_ms or total_ms <= 0 or heard >= total_ms:
        return text
    cut = len(text) * heard / total_ms
    end = 0
    for match in _WORD.finditer(text):
        if (match.start() + match.end()) / 2 <= cut:
            end = match.end()
        else:
            break
    return text[:end]
