"""voiceconv_transcripts, voiceconv_purge_calls, and the status callback that ends a record."""

from __future__ import annotations

import datetime as dt
import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import RequestFactory
from django.utils import timezone

from voiceconv.models import Call, ToolInvocation, TranscriptEntry

pytestmark = pytest.mark.django_db


def make_call(n: int, age: dt.timedelta = dt.timedelta(0), entries: int = 2) -> Call:
    call = Call.objects.create(twilio_call_sid=f"CA{n:032x}", twilio_stream_sid=f"MZ{n:032x}",
                               from_number="+14155550100", to_number="+14155550199")
    Call.objects.filter(pk=call.pk).update(created_at=timezone.now() - age)
    for i in range(1, entries + 1):
        TranscriptEntry.objects.create(
            call=call, sequence=i, role="caller" if i % 2 else "assistant", text=f"c{n} t{i}",
            interrupted=(i == 2), heard_ms=300 if i == 2 else None,
            total_ms=900 if i == 2 else None, heard_text="c2" if i == 2 else "",
        )
    call.refresh_from_db()
    return call


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_transcripts_jsonl_since_and_call() -> None:
    old = make_call(1, age=dt.timedelta(days=10))
    new = make_call(2, age=dt.timedelta(hours=1))
    rows = [json.loads(line) for line in run("voiceconv_transcripts").splitlines()]
    assert [(r["call_sid"], r["sequence"]) for r in rows] == [
        (old.twilio_call_sid, 1), (old.twilio_call_sid, 2),
        (new.twilio_call_sid, 1), (new.twilio_call_sid, 2),
    ]
    for r in rows:
        assert {"call_sid", "stream_sid", "role", "text", "interrupted", "heard_ms"} <= r.keys()
    assert rows[1]["interrupted"] is True and rows[1]["heard_ms"] == 300

    rows = [json.loads(x) for x in run("voiceconv_transcripts", "--since", "7d").splitlines()]
    assert {r["call_sid"] for r in rows} == {new.twilio_call_sid}
    since = (timezone.now() - dt.timedelta(days=11)).date().isoformat()
    out = run("voiceconv_transcripts", "--format", "jsonl", "--since", since)
    assert len(out.splitlines()) == 4
    out = run("voiceconv_transcripts", "--call", old.twilio_call_sid)
    assert {json.loads(x)["call_sid"] for x in out.splitlines()} == {old.twilio_call_sid}


def test_transcripts_text() -> None:
    make_call(1)
    make_call(2)
    out = run("voiceconv_transcripts", "--format", "text")
    assert out.count("Call CA") == 2
    assert "Caller: c1 t1" in out and "Assistant (interrupted, heard 0.3 s of 0.9 s)" in out


def test_transcripts_bad_since() -> None:
    with pytest.raises(CommandError, match="--since"):
        run("voiceconv_transcripts", "--since", "last tuesday")


def test_purge_calls() -> None:
    old = make_call(1, age=dt.timedelta(days=40))
    ToolInvocation.objects.create(call=old, tool_name="t", started_at=timezone.now())
    keep = make_call(2, age=dt.timedelta(days=5))
    out = run("voiceconv_purge_calls", "--older-than-days", "30", "--dry-run")
    assert "Would delete 1 call(s)" in out and "2 transcript entries" in out
    assert Call.objects.count() == 2
    out = run("voiceconv_purge_calls", "--older-than-days", "30")
    assert "Deleted 1 call(s)" in out and "1 tool invocation(s)" in out
    assert list(Call.objects.all()) == [keep]
    assert not TranscriptEntry.objects.filter(call_id=old.pk).exists()
    assert not ToolInvocation.objects.exists()
    assert TranscriptEntry.objects.filter(call=keep).count() == 2


# --- the status callback -----------------------------------------------------------------------


def post_status(**form: str) -> int:
    """The status view (signature checks off), its database work in a thread of its own."""
    from asgiref.sync import async_to_sync
    from django.test import override_settings

    from voiceconv.views import call_status

    request = RequestFactory().post("/twilio/status/", form)
    with override_settings(VOICECONV={"VALIDATE_TWILIO_SIGNATURE": False}):
        return async_to_sync(call_status)(request).status_code


@pytest.mark.django_db(transaction=True)
def test_status_callback_records_final_status_and_duration() -> None:
    call = make_call(1)
    assert post_status(CallSid=call.twilio_call_sid, CallStatus="completed",
                       CallDuration="37") == 204
    call.refresh_from_db()
    assert call.status == "completed" and call.duration_seconds == 37
    assert call.ended_at is not None


@pytest.mark.django_db(transaction=True)
def test_status_callback_for_an_unknown_call_creates_it() -> None:
    assert post_status(CallSid="CA" + "f" * 32, CallStatus="no-answer", From="+1555",
                       To="+1666", Direction="outbound-api") == 204
    call = Call.objects.get(twilio_call_sid="CA" + "f" * 32)
    assert (call.status, call.from_number, call.direction) == ("no-answer", "+1555",
                                                               "outbound-api")


@pytest.mark.django_db(transaction=True)
def test_status_callback_bad_input(caplog: pytest.LogCaptureFixture) -> None:
    assert post_status(CallStatus="completed") == 400
    call = make_call(1)
    assert post_status(CallSid=call.twilio_call_sid, CallStatus="exploded",
                       CallDuration="-4") == 204
    call.refresh_from_db()
    assert call.status == "ringing" and call.duration_seconds is None
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "unknown CallStatus 'exploded'" in messages and "bad CallDuration '-4'" in messages


@pytest.mark.django_db(transaction=True)
def test_status_callback_signals_what_it_recorded() -> None:
    from voiceconv import signals

    seen: list[dict[str, object]] = []

    def receiver(sender: object, **kwargs: object) -> None:
        seen.append({"sender": sender, **kwargs})

    signals.call_status_changed.connect(receiver, weak=False)
    try:
        call = make_call(3)
        assert post_status(CallSid=call.twilio_call_sid, CallStatus="busy") == 204
    finally:
        signals.call_status_changed.disconnect(receiver)
    assert len(seen) == 1 and seen[0]["sender"] is Call
    assert seen[0]["status"] == "busy" and seen[0]["created"] is False
    assert seen[0]["call"].status == "busy"  # type: ignore[attr-defined]
