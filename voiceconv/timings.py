"""Time to first audio, aggregated: p50 and p90 of the per-turn shares, per call and per agent.

Each assistant turn that answers the caller stores its time to first audio (``speech_stopped``
received → the answer's first audio sent to Twilio) and the two shares it splits into, the
model's and the bridge's (:mod:`voiceconv.session.timing`); every assistant turn, the greeting
too, stores the bridge's share. These helpers read them back for the admin.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["TURN_FIELDS", "TurnRow", "fine_ms", "p50_p90", "turn_rows"]

#: The per-turn timing fields of ``TranscriptEntry``, with how the admin names them.
TURN_FIELDS: tuple[tuple[str, str], ...] = (
    ("caller stopped → first audio sent", "first_audio_ms"),
    ("model's share (→ first delta)", "model_ms"),
    ("bridge's share (delta → Twilio)", "bridge_ms"),
)

#: (label, p50 ms, p90 ms, turns measured)
TurnRow = tuple[str, float, float, int]


def p50_p90(values: Sequence[float]) -> tuple[float, float]:
    """The median and 90th percentile of ``values`` (nearest rank; not empty)."""
    ordered = sorted(values)
    n = len(ordered)
    return ordered[(n - 1) // 2], ordered[min(n - 1, round(0.9 * (n - 1)))]


def turn_rows(entries: Iterable[Mapping[str, Any] | Any]) -> list[TurnRow]:
    """p50 / p90 of each per-turn field over ``entries`` (transcript entries, or dicts of
    their fields); a field no entry has is left out."""
    rows: list[TurnRow] = []
    items = list(entries)
    for label, field in TURN_FIELDS:
        values = [
            v for e in items
            if (v := (e.get(field) if isinstance(e, Mapping) else getattr(e, field, None)))
            is not None
        ]
        if values:
            p50, p90 = p50_p90(values)
            rows.append((label, p50, p90, len(values)))
    return rows


def fine_ms(ms: float | None) -> str:
    """A share that may be well under a millisecond: ``"0.42 ms"``, ``"12.3 ms"``,
    ``"640 ms"``; ``""`` when unknown."""
    if ms is None:
        return ""
    if ms < 10:
        return f"{ms:.2f} ms"
    if ms < 100:
        return f"{ms:.1f} ms"
    return f"{ms:.0f} ms"
