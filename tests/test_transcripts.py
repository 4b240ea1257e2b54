"""Heard-text estimation, transcript export and ``--since`` parsing."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from voiceconv.models import Agent, Call, TranscriptEntry
from voiceconv.transcripts import (
    as_text,
    entries_as_jsonl,
    estimate_heard_text,
    parse_since,
    unheard_tail,
)

TEXT = "Our opening hours are nine to five, Monday to Friday."


@pytest.mark.parametrize(
    ("text", "heard_ms", "total_ms", "expected"),
    [
        # Nothing played, nothing heard; everything played, everything heard.
        (TEXT, 0, 4000, ""),
        (TEXT, -5, 4000, ""),
        (TEXT, 4000, 4000, TEXT),
        (TEXT, 9999, 4000, TEXT),
        # Unknown total: we cannot estimate, so keep the whole text.
        (TEXT, 1000, 0, TEXT),
        (TEXT, 1000, None, TEXT),
        (TEXT, None, 4000, ""),
        ("", 100, 200, ""),
        # Half of 53 characters is 26.5: "nine" (22-26, middle 24) is heard, "to" (27-29) not.
        (TEXT, 2000, 4000, "Our opening hours are nine"),
        # 10% = 5.3 characters: "Our" (middle 1.5) yes, "opening" (4-11, middle 7.5) no.
        (TEXT, 400, 4000, "Our"),
        # A word counts once its middle was played: "opening" at 7.5/53 ≈ 14.2 %.
        (TEXT, 570, 4000, "Our opening"),
        (TEXT, 560, 4000, "Our"),
        # Less than half of the first word: nothing.
        ("Hello there", 100, 2000, ""),
        ("Hello there", 1000, 2000, "Hello"),
        # Punctuation sticks to its word; no trailing space or comma split.
        ("Yes, of course.", 700, 1500, "Yes, of"),
        # Multiple spaces and newlines stay inside the prefix, never at its end.
        ("One  two\nthree", 1000, 1400, "One  two"),
        ("Supercalifragilistic", 1400, 2000, "Supercalifragilistic"),
        ("Supercalifragilistic", 900, 2000, ""),
    ],
)
def test_estimate_heard_text(
    text: str, heard_ms: int | None, total_ms: int | None, expected: str
) -> None:
    assert estimate_heard_text(text, heard_ms, total_ms) == expected


@given(
    text=st.text(alphabet=st.sampled_from("ab ,.\n"), max_size=60),
    heard=st.integers(min_value=-10, max_value=5000),
    total=st.integers(min_value=1, max_value=5000),
)
def test_heard_text_is_a_prefix_cut_on_a_word_boundary(text: str, heard: int, total: int) -> None:
    heard_text = estimate_heard_text(text, heard, total)
    assert text.startswith(heard_text)
    if heard >= total:
        assert heard_text == text
        return
    assert heard_text == heard_text.rstrip()
    rest = text[len(heard_text):]
    # Never mid-word: the next character is whitespace, or nothing is left.
    if heard_text and rest:
        assert rest[0].isspace()
    # More audio never means less text.
    assert len(estimate_heard_text(text, heard + 100, total)) >= len(heard_text)


def test_unheard_tail() -> None:
    assert unheard_tail("abc def", "abc") == " def"
    assert unheard_tail("abc def", "") == "abc def"
    assert unheard_tail("abc def", "xyz") == ""


@pytest.mark.parametrize(
    ("value", "delta"),
    [("7d", dt.timedelta(days=7)), ("12h", dt.timedelta(hours=12)),
     ("30m", dt.timedelta(minutes=30)), ("2w", dt.timedelta(weeks=2)),
     ("90s", dt.timedelta(seconds=90)), (" 3D ", dt.timedelta(days=3))],
)
def test_parse_since_durations(value: str, delta: dt.timedelta) -> None:
    now = timezone.now()
    assert parse_since(value, now=now) == now - delta


def test_parse_since_dates() -> None:
    assert parse_since("2026-01-31") == dt.datetime(2026, 1, 31, tzinfo=dt.UTC)
    assert parse_since("2026-01-31T08:30:00+02:00") == dt.datetime(
        2026, 1, 31, 6, 30, tzinfo=dt.UTC
    )
    for bad in ("yesterday", "7 days", "2026-13-01", ""):
        with pytest.raises(ValueError):
            parse_since(bad)


@pytest.fixture
def call_with_entries(db: None) -> Call:
    agent = Agent.objects.create(name="Support", slug="support")
    call = Call.objects.create(
        twilio_call_sid="CA" + "a" * 32,
        twilio_stream_sid="MZ" + "b" * 32,
        from_number="+14155550100",
        to_number="+14155550199",
        agent=agent,
        status="completed",
        end_reason="caller_hung_up",
        stream_started_at=dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC),
    )
    TranscriptEntry.objects.create(call=call, sequence=1, role="caller", text="When are you open?",
                                   offset_ms=1200, openai_item_id="item_1")
    TranscriptEntry.objects.create(
        call=call, sequence=2, role="assistant", text=TEXT, offset_ms=3400, latency_ms=640,
        interrupted=True, heard_ms=2000, total_ms=4000,
        heard_text="Our opening hours are nine",
    )
    TranscriptEntry.objects.create(call=call, sequence=3, role="dtmf", text="5", offset_ms=65000)
    return call


def test_entries_as_jsonl(call_with_entries: Call) -> None:
    body = entries_as_jsonl(TranscriptEntry.objects.all())
    lines = body.splitlines()
    assert body.endswith("\n") and len(lines) == 3
    objects = [json.loads(line) for line in lines]
    first, second, third = objects
    for obj in objects:
        assert obj["call_sid"] == "CA" + "a" * 32
        assert obj["stream_sid"] == "MZ" + "b" * 32
        assert {"role", "text", "interrupted", "heard_ms", "sequence", "offset_ms",
                "latency_ms", "heard_text", "total_ms", "created_at"} <= obj.keys()
    assert [o["sequence"] for o in objects] == [1, 2, 3]
    assert first["role"] == "caller" and first["interrupted"] is False
    assert first["heard_text"] is None and first["openai_item_id"] == "item_1"
    assert second["interrupted"] is True
    assert (second["heard_ms"], second["total_ms"]) == (2000, 4000)
    assert second["heard_text"] == "Our opening hours are nine"
    assert second["latency_ms"] == 640
    assert third["role"] == "dtmf" and third["text"] == "5"


def test_as_text(call_with_entries: Call) -> None:
    text = as_text(call_with_entries)
    lines = text.splitlines()
    assert lines[0].startswith("Call CA" + "a" * 32 + ", from +14155550100 to +14155550199")
    assert "agent Support" in lines[0] and "status completed (caller_hung_up)" in lines[0]
    assert lines[1] == "[00:01.2] Caller: When are you open?"
    assert lines[2] == (
        "[00:03.4] Assistant (latency 640 ms; interrupted, heard 2.0 s of 4.0 s): "
        "Our opening hours are nine [unheard: to five, Monday to Friday.]"
    )
    assert lines[3] == "[01:05.0] DTMF: 5"
