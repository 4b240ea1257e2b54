"""Transcript entries in the order they happened in the call, however late they are written.

A caller's turn is transcribed after the answer to it has started and a tool's entry is
written when it returns: the record, the export and the signals must still read
question → tool → answer.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from django.utils import timezone

from voiceconv import signals
from voiceconv.consumers import MediaStreamConsumer
from voiceconv.events import CallInfo, TranscriptTurn
from voiceconv.models import Call, TranscriptEntry
from voiceconv.recorder import CallRecorder
from voiceconv.transcripts import as_text, entries_as_jsonl

_sids = itertools.count(1)


def new_call() -> Call:
    n = next(_sids)
    return Call.objects.create(twilio_call_sid=f"CA{n:032x}", twilio_stream_sid=f"MZ{n:032x}")


def rows(call: Call) -> list[tuple[int, int | None, str]]:
    return list(
        TranscriptEntry.objects.filter(call=call)
        .order_by("sequence")
        .values_list("sequence", "write_sequence", "text")
    )


@pytest.mark.django_db
def test_a_late_entry_goes_before_the_entries_that_began_after_it() -> None:
    call = new_call()
    add = TranscriptEntry.objects.add_in_order
    add(call, role="assistant", text="Hello!", offset_ms=300)
    add(call, role="tool", text="get_time() → 21:47", offset_ms=7300, openai_item_id="item_t")
    add(call, role="assistant", text="It is 21:47.", offset_ms=7900, openai_item_id="item_a")
    add(call, role="caller", text="What time is it?", offset_ms=6000, openai_item_id="item_c")
    assert rows(call) == [
        (1, 1, "Hello!"),
        (2, 4, "What time is it?"),
        (3, 2, "get_time() → 21:47"),
        (4, 3, "It is 21:47."),
    ]


@pytest.mark.django_db
def test_equal_offsets_keep_write_order_and_unknown_offsets_go_last() -> None:
    call = new_call()
    add = TranscriptEntry.objects.add_in_order
    add(call, role="caller", text="one", offset_ms=1000)
    add(call, role="dtmf", text="5", offset_ms=1000)
    add(call, role="system", text="note", offset_ms=None)
    add(call, role="caller", text="zero", offset_ms=0)
    assert [text for _, _, text in rows(call)] == ["zero", "one", "5", "note"]
    assert [w for _, w, _ in rows(call)] == [4, 1, 2, 3]


@pytest.mark.django_db
def test_a_retried_write_of_the_same_item_is_saved_once() -> None:
    call = new_call()
    add = TranscriptEntry.objects.add_in_order
    first = add(call, role="caller", text="Hi", offset_ms=100, openai_item_id="item_1")
    again = add(call, role="caller", text="Hi", offset_ms=100, openai_item_id="item_1")
    assert again.pk == first.pk
    assert TranscriptEntry.objects.filter(call=call).count() == 1


@pytest.mark.django_db(transaction=True)
async def test_the_recorder_saves_and_signals_in_conversation_order() -> None:
    """Turns handed over in finishing order are saved, exported and signalled in call order."""
    n = next(_sids)
    info = CallInfo(call_sid=f"CA{n:032x}", stream_sid=f"MZ{n:032x}")
    seen: list[tuple[int, str]] = []

    def receiver(sender: Any, entry: TranscriptEntry, **kwargs: Any) -> None:
        seen.append((entry.sequence, entry.text))

    signals.transcript_entry.connect(receiver, dispatch_uid="test-order")
    try:
        recorder = CallRecorder(info, sender=MediaStreamConsumer)
        recorder.start()
        recorder.stream_started(timezone.now())
        recorder.turn(TranscriptTurn("assistant", "Hello, how can I help?", "item_g", 200))
        # The answer's tool and the answer finish before the question is transcribed.
        recorder.turn(TranscriptTurn("tool", "get_time({}) → 21:47", "item_f", 7300))
        recorder.turn(TranscriptTurn("assistant", "It is 21:47.", "item_a", 7900, latency_ms=600))
        recorder.turn(TranscriptTurn("caller", "What time is it?", "item_c", 6000))
        recorder.ended("caller_hung_up")
        await recorder.aclose()
    finally:
        signals.transcript_entry.disconnect(dispatch_uid="test-order")

    call = await Call.objects.aget(twilio_call_sid=info.call_sid)
    expected = ["Hello, how can I help?", "What time is it?", "get_time({}) → 21:47",
                "It is 21:47."]
    ordered = [e async for e in call.transcript_entries.order_by("sequence")]
    assert [e.text for e in ordered] == expected
    assert [e.write_sequence for e in ordered] == [1, 4, 2, 3]
    # Each signal carries the entry's place at the time it was saved.
    assert seen == [(1, expected[0]), (2, expected[2]), (3, expected[3]), (2, expected[1])]

    from asgiref.sync import sync_to_async

    text = await sync_to_async(as_text)(call)
    lines = text.splitlines()[1:]
    assert [line.split("] ", 1)[1].split(":", 1)[0] for line in lines] == [
        "Assistant", "Caller", "Tool", "Assistant (latency 600 ms)"
    ]
    assert lines[1].startswith("[00:06.0] Caller")
    jsonl = await sync_to_async(entries_as_jsonl)(TranscriptEntry.objects.filter(call=call))
    assert '"write_sequence": 4' in jsonl.splitlines()[1]
