"""Conversation turns from GPT-Live's timed transcript fragments (pure; see :data:`TURN_GAP_MS`).

GPT-Live sends caller and assistant transcripts as timed deltas without turn events. A
:class:`TurnBuilder` groups them: a fragment continues its speaker's open turn unless it
starts more than ``gap_ms`` after that turn's last fragment ended; a fragment of the other
speaker ends the open turn. :meth:`TurnBuilder.flush` ends whatever is open (end of call).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from voiceconv.session.live_rules import TURN_GAP_MS

Speaker = Literal["caller", "assistant"]


@dataclass(slots=True)
class FragmentTurn:
    """A turn being built, or built: its text and its span on the session timeline."""

    speaker: Speaker
    start_ms: int
    end_ms: int
    parts: list[str] = field(default_factory=list)
    #: What the caller of :meth:`TurnBuilder.add` tagged the first fragment with (an item id).
    tag: str | None = None

    @property
    def text(self) -> str:
        return " ".join("".join(self.parts).split())


class TurnBuilder:
    """Timed fragments in (delivery order), finished turns out."""

    def __init__(self, gap_ms: int = TURN_GAP_MS) -> None:
        self.gap_ms = gap_ms
        self.open: dict[Speaker, FragmentTurn] = {}

    def add(
        self, speaker: Speaker, text: str, start_ms: int, end_ms: int, tag: str | None = None
    ) -> list[FragmentTurn]:
        """One fragment; returns the turns it finished (oldest first)."""
        done: list[FragmentTurn] = []
        other: Speaker = "assistant" if speaker == "caller" else "caller"
        if other in self.open:
            done.append(self.open.pop(other))
        turn = self.open.get(speaker)
        if turn is not None and start_ms - turn.end_ms > self.gap_ms:
            done.append(self.open.pop(speaker))
            turn = None
        if turn is None:
            turn = self.open[speaker] = FragmentTurn(speaker, start_ms, end_ms, tag=tag)
        turn.parts.append(text)
        turn.end_ms = max(turn.end_ms, end_ms)
        return [t for t in sorted(done, key=lambda t: t.start_ms) if t.text]

    def close(self, speaker: Speaker) -> FragmentTurn | None:
        """End ``speaker``'s open turn now (None when there is none or it is empty)."""
        turn = self.open.pop(speaker, None)
        return turn if turn is not None and turn.text else None

    def flush(self) -> list[FragmentTurn]:
        """End every open turn (oldest first)."""
        turns = sorted(self.open.values(), key=lambda t: t.start_ms)
        self.open.clear()
        return [t for t in turns if t.text]
