"""What the caller heard, and transcript export (JSON lines and plain text).

OpenAI keeps no transcript of a truncated assistant item, so for a turn the caller barged in on
we estimate the heard part from the fraction of its audio that was played, cut on word
boundaries: :func:`estimate_heard_text`.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from voiceconv.formatting import clock, seconds, timestamp

# The estimate lives in the call core, which records heard text as turns end.
from voiceconv.session import estimate_heard as estimate_heard_text
from voiceconv.timings import fine_ms

__all__ = [
    "as_text",
    "calls_as_text",
    "entries_as_jsonl",
    "entry_as_dict",
    "entry_as_text",
    "estimate_heard_text",
    "iter_entries_jsonl",
    "parse_since",
    "unheard_tail",
]

if TYPE_CHECKING:
    from voiceconv.models import Call, TranscriptEntry




def unheard_tail(text: str, heard_text: str) -> str:
    """The part of ``text`` after ``heard_text`` (``""`` if it is not a prefix)."""
    return text[len(heard_text):] if text.startswith(heard_text) else ""


# --- export ------------------------------------------------------------------------------------


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def entry_as_dict(entry: TranscriptEntry) -> dict[str, Any]:
    """One transcript entry as a JSON-ready dict (the JSON lines export format)."""
    call = entry.call
    return {
        "call_sid": call.twilio_call_sid,
        "stream_sid": call.twilio_stream_sid,
        "sequence": entry.sequence,
        "write_sequence": entry.write_sequence,
        "role": entry.role,
        "text": entry.text,
        "interrupted": entry.interrupted,
        "heard_ms": entry.heard_ms,
        "total_ms": entry.total_ms,
        "heard_text": entry.heard_text if entry.interrupted else None,
        "offset_ms": entry.offset_ms,
        "latency_ms": entry.latency_ms,
        "first_audio_ms": entry.first_audio_ms,
        "model_ms": entry.model_ms,
        "bridge_ms": entry.bridge_ms,
        "call_start_ms": call.start_timings(),
        "call_cost": call.cost_summary(),
        "openai_item_id": entry.openai_item_id or None,
        "created_at": _iso(entry.created_at),
    }


def iter_entries_jsonl(entries: Iterable[TranscriptEntry]) -> Iterator[str]:
    """Yield one JSON line (with trailing newline) per entry.

    A queryset is read in chunks with its call joined, in call and sequence order.
    """
    if hasattr(entries, "select_related"):
        entries = (
            entries.select_related("call", "call__agent")
            .order_by("call__created_at", "call_id", "sequence")
            .iterator(chunk_size=500)
        )
    for entry in entries:
        yield json.dumps(entry_as_dict(entry), ensure_ascii=False) + "\n"


def entries_as_jsonl(entries: Iterable[TranscriptEntry]) -> str:
    """All entries as JSON lines (one object per line)."""
    return "".join(iter_entries_jsonl(entries))


_ROLE_LABEL = {
    "caller": "Caller",
    "assistant": "Assistant",
    "tool": "Tool",
    "system": "System",
    "dtmf": "DTMF",
}


def entry_as_text(entry: TranscriptEntry) -> str:
    """One line for an entry: ``[mm:ss.s] Role: text`` (call time: when the turn began),
    interruptions spelled out."""
    label = _ROLE_LABEL.get(entry.role, entry.role.title())
    notes: list[str] = []
    if entry.latency_ms is not None:
        notes.append(f"latency {entry.latency_ms} ms")
    if entry.first_audio_ms is not None:
        notes.append(f"first audio {fine_ms(entry.first_audio_ms)}: model "
                     f"{fine_ms(entry.model_ms)}, bridge {fine_ms(entry.bridge_ms)}")
    elif entry.bridge_ms is not None:
        notes.append(f"bridge {fine_ms(entry.bridge_ms)}")
    text = entry.text
    if entry.interrupted:
        notes.append(f"interrupted, heard {seconds(entry.heard_ms)} of {seconds(entry.total_ms)}")
        tail = unheard_tail(entry.text, entry.heard_text).strip()
        if tail:
            text = f"{entry.heard_text} [unheard: {tail}]"
    suffix = f" ({'; '.join(notes)})" if notes else ""
    return f"[{clock(entry.offset_ms, missing='--:--.-')}] {label}{suffix}: {text}"


def as_text(call: Call) -> str:
    """A call's transcript as plain text, with a header line about the call."""
    started = call.started_at
    parts = [
        f"Call {call.twilio_call_sid}",
        f"from {call.from_number or '?'} to {call.to_number or '?'}",
    ]
    if call.agent_id:
        parts.append(f"agent {call.agent}")
    if started:
        parts.append(f"started {timestamp(started)}")
    status = call.status + (f" ({call.end_reason})" if call.end_reason else "")
    parts.append(f"status {status}")
    parts.append(f"cost ${call.estimated_cost:.4f} ({call.pricing_model})")
    lines = [", ".join(parts)]
    lines.extend(entry_as_text(e) for e in call.transcript_entries.order_by("sequence"))
    return "\n".join(lines) + "\n"


def calls_as_text(calls: Iterable[Call]) -> str:
    """Several calls' transcripts as plain text, separated by a blank line."""
    return "\n".join(as_text(call) for call in calls)


# --- command-line helpers --------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(value: str, *, now: dt.datetime | None = None) -> dt.datetime:
    """A point in time from ``"7d"``/``"12h"``/``"30m"``/``"2w"``/``"90s"`` or an ISO date(time).

    Naive datetimes are taken in the current time zone. Raises ``ValueError`` otherwise.
    """
    now = now or timezone.now()
    match = _DURATION.match(value)
    if match:
        amount, unit = int(match.group(1)), match.group(2).lower()
        return now - dt.timedelta(seconds=amount * _UNIT_SECONDS[unit])
    parsed = parse_datetime(value.strip())
    if parsed is None:
        day = parse_date(value.strip())
        if day is None:
            raise ValueError(
                f"{value!r} is neither a duration (7d, 12h, 30m) nor an ISO date or datetime"
            )
        parsed = dt.datetime.combine(day, dt.time.min)
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed)
    result: dt.datetime = parsed
    return result
