"""How call times read, the same in the admin and in the transcript export.

A call is short and its events are close together, so times show seconds (and milliseconds
where they are a latency or a moment within the call), and moments within a call read best
relative to its start: ``+6.012 s``, ``[00:06.0]``.
"""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

__all__ = ["clock", "duration", "milliseconds", "relative", "seconds", "timestamp"]


def clock(offset_ms: int | None, missing: str = "") -> str:
    """Call time as ``mm:ss.s`` (``"01:06.3"``); ``missing`` when unknown."""
    if offset_ms is None:
        return missing
    minutes, secs = divmod(max(offset_ms, 0) / 1000, 60)
    # Round first so that 59.96 s reads 01:00.0, not 00:60.0.
    tenths = round(secs * 10)
    if tenths >= 600:
        minutes, tenths = minutes + 1, tenths - 600
    return f"{int(minutes):02d}:{tenths / 10:04.1f}"


def seconds(ms: int | None, unit: str = " s") -> str:
    """Milliseconds as seconds with one decimal: ``"1.2 s"`` (``None`` reads as 0)."""
    return f"{(ms or 0) / 1000:.1f}{unit}"


def milliseconds(ms: float | None) -> str:
    """A latency: ``"600 ms"``; ``""`` when unknown."""
    return "" if ms is None else f"{ms:.0f} ms"


def duration(total_seconds: float | None) -> str:
    """A call's length as ``m:ss`` (``"1:23"``), ``h:mm:ss`` past an hour; ``""`` when unknown."""
    if total_seconds is None:
        return ""
    minutes, secs = divmod(round(total_seconds), 60)
    if minutes >= 60:
        hours, minutes = divmod(minutes, 60)
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def timestamp(value: dt.datetime | None, *, date: bool = True) -> str:
    """A moment in the current time zone with milliseconds: ``2026-12-01 21:47:05.123 UTC``.

    With ``date=False`` only the time of day: ``21:47:05.123``. ``""`` when unknown.
    """
    if value is None:
        return ""
    local = timezone.localtime(value) if timezone.is_aware(value) else value
    text = local.strftime("%H:%M:%S.") + f"{local.microsecond // 1000:03d}"
    if date:
        zone = local.tzname() or ""
        text = f"{local:%Y-%m-%d} {text}" + (f" {zone}" if zone else "")
    return text


def relative(value: dt.datetime | None, start: dt.datetime | None) -> str:
    """``value`` as seconds after ``start`` with milliseconds: ``"+6.012 s"``; ``""`` if either
    is unknown."""
    if value is None or start is None:
        return ""
    delta = (value - start).total_seconds()
    sign = "-" if delta < 0 else "+"
    return f"{sign}{abs(delta):.3f} s"
