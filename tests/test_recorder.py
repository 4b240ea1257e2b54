"""CallRecorder: ordered writes off the audio path, signals, callbacks, and nothing lost."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, connections
from django.utils import timezone

from voiceconv import signals
from voiceconv.consumers import MediaStreamConsumer
from voiceconv.events import CallInfo, TranscriptTurn, Usage
from voiceconv.models import Agent, Call, ToolInvocation, TranscriptEntry
from voiceconv.recorder import CallRecorder
from voiceconv.tools.runtime import ToolResult
from voiceconv.writer import RecordWriter

from .db_faults import SQLiteLock, sqlite_only

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

DATABASE_URL = os.environ.get("DATABASE_URL", "")
_sids = itertools.count(1)


def make_info(**fields: Any) -> CallInfo:
    n = next(_sids)
    defaults: dict[str, Any] = {
        "call_sid": f"CA{n:032x}",
        "stream_sid": f"MZ{n:032x}",
        "account_sid": "AC" + "0" * 32,
        "from_number": "+14155550100",
        "to_number": "+14155550199",
        "direction": "inbound",
        "custom_parameters": {"agent": "support"},
    }
    defaults.update(fields)
    return CallInfo(**defaults)


def make_recorder(info: CallInfo | None = None, **kwargs: Any) -> CallRecorder:
    return CallRecorder(info or make_info(), sender=MediaStreamConsumer, **kwargs)


def caller(text: str, **kw: Any) -> TranscriptTurn:
    return TranscriptTurn(role="caller", text=text, **kw)


def assistant(text: str, **kw: Any) -> TranscriptTurn:
    return TranscriptTurn(role="assistant", text=text, **kw)


async def entries(call_sid: str) -> list[TranscriptEntry]:
    return [
        e async for e in TranscriptEntry.objects.filter(call__twilio_call_sid=call_sid)
        .order_by("sequence")
    ]


async def texts(call_sid: str) -> list[str]:
    return [e.text for e in await entries(call_sid)]


async def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> None:
    """Poll an async predicate until it is true (fails the test after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def tool_result(name: str = "lookup_order", **kw: Any) -> ToolResult:
    fields: dict[str, Any] = {
        "call_id": "call_abc",
        "name": name,
        "arguments": '{"order_id": "42"}',
        "output": '{"status": "shipped"}',
        "started_at": timezone.now(),
        "duration_ms": 12,
    }
    fields.update(kw)
    return ToolResult(**fields)


@pytest.fixture
def recording() -> Iterator[dict[str, list[dict[str, Any]]]]:
    """Record every voiceconv signal sent by the consumer class; disconnect afterwards."""
    seen: dict[str, list[dict[str, Any]]] = {
        "call_started": [], "transcript_entry": [], "tool_invoked": [], "call_ended": [],
    }

    def sync_receiver(name: str) -> Callable[..., None]:
        def receiver(sender: Any, **kwargs: Any) -> None:
            kwargs.pop("signal")
            seen[name].append({"sender": sender, **kwargs})

        return receiver

    def async_receiver(name: str) -> Callable[..., Any]:
        async def receiver(sender: Any, **kwargs: Any) -> None:
            kwargs.pop("signal")
            seen[name].append({"sender": sender, **kwargs})

        return receiver

    receivers = {
        "call_started": sync_receiver("call_started"),
        "transcript_entry": async_receiver("transcript_entry"),
        "tool_invoked": sync_receiver("tool_invoked"),
        "call_ended": async_receiver("call_ended"),
    }
    for name, receiver in receivers.items():
        getattr(signals, name).connect(receiver, sender=MediaStreamConsumer, weak=False)
    yield seen
    for name, receiver in receivers.items():
        getattr(signals, name).disconnect(receiver, sender=MediaStreamConsumer)


# --- the whole call ------------------------------------------------------------------------------


async def test_a_call_is_written_in_order(recording: dict[str, list[dict[str, Any]]]) -> None:
    agent = await Agent.objects.acreate(name="Support", slug="support", model="gpt-realtime-2.1")
    info = make_info(agent_pk=agent.pk)
    started = timezone.now()
    rec = make_recorder(info)
    rec.start()
    rec.stream_started(started)
    rec.turn(caller("Hi, when are you open?", item_id="item_1", offset_ms=800))
    rec.first_audio(started + dt.timedelta(seconds=2))
    rec.first_audio(started + dt.timedelta(seconds=9))  # only the first one counts
    rec.turn(assistant("Nine to five.", item_id="item_2", offset_ms=2100, latency_ms=640))
    rec.usage(Usage(input_tokens=100, output_tokens=50, input_audio_tokens=100,
                    output_audio_tokens=50))
    rec.turn(caller("Where is order 42?", offset_ms=5000))
    rec.tool_invocation(tool_result())
    rec.turn(TranscriptTurn(role="tool", text='lookup_order -> {"status": "shipped"}'))
    rec.turn(
        assistant("It has shipped and will arrive tomorrow morning.", latency_ms=900,
                  interrupted=True, heard_ms=1000, total_ms=4000)
    )
    rec.usage(Usage(input_tokens=200, output_tokens=20, input_text_tokens=200,
                    output_text_tokens=20))
    rec.turn(TranscriptTurn(role="dtmf", text="5"))
    rec.ended("caller_hung_up")
    await rec.aclose()

    call = await Call.objects.aget(twilio_call_sid=info.call_sid)
    assert info.call_pk == call.pk
    assert call.agent_id == agent.pk and call.model == "gpt-realtime-2.1"
    assert call.twilio_stream_sid == info.stream_sid
    assert (call.from_number, call.to_number, call.direction) == (
        "+14155550100", "+14155550199", "inbound",
    )
    assert call.custom_parameters == {"agent": "support"}
    assert call.stream_started_at == started
    assert call.first_audio_at == started + dt.timedelta(seconds=2)
    assert call.status == "completed" and call.end_reason == "caller_hung_up"
    assert call.ended_at is not None and call.duration_seconds is not None
    assert call.duration_seconds == pytest.approx(
        (call.ended_at - started).total_seconds(), abs=0.001
    )
    assert (call.input_tokens, call.output_tokens, call.responses) == (300, 70, 2)
    assert (call.input_audio_tokens, call.output_audio_tokens) == (100, 50)
    assert (call.input_text_tokens, call.output_text_tokens) == (200, 20)
    # 100*32 + 50*64 + 200*4 + 20*16 = 7520 per 1M
    assert call.estimated_cost == Decimal("0.007680")

    rows = await entries(info.call_sid)
    assert [(e.sequence, e.role) for e in rows] == [
        (1, "caller"), (2, "assistant"), (3, "caller"), (4, "tool"), (5, "assistant"),
        (6, "dtmf"),
    ]
    assert rows[0].openai_item_id == "item_1" and rows[0].offset_ms == 800
    assert rows[1].latency_ms == 640 and not rows[1].interrupted and rows[1].heard_text == ""
    cut = rows[4]
    assert cut.interrupted and (cut.heard_ms, cut.total_ms) == (1000, 4000)
    # No heard_text from the core: the recorder estimates it (a quarter, on a word boundary).
    assert cut.heard_text == "It has shipped"
    assert cut.unheard_text == " and will arrive tomorrow morning."

    invocation = await ToolInvocation.objects.aget(call=call)
    assert invocation.tool_name == "lookup_order" and invocation.openai_call_id == "call_abc"
    assert invocation.output == '{"status": "shipped"}' and invocation.duration_ms == 12

    # Signals: right sender, right arguments, in order.
    (started_sig,) = recording["call_started"]
    assert started_sig["sender"] is MediaStreamConsumer
    assert started_sig["call"].pk == call.pk and started_sig["info"] is info
    assert [s["entry"].sequence for s in recording["transcript_entry"]] == [1, 2, 3, 4, 5, 6]
    for sig in recording["transcript_entry"]:
        assert sig["sender"] is MediaStreamConsumer and sig["call"].pk == call.pk
        assert sig["entry"].text == sig["turn"].text
    assert recording["transcript_entry"][4]["turn"].heard_ms == 1000
    (tool_sig,) = recording["tool_invoked"]
    assert tool_sig["invocation"].pk == invocation.pk and tool_sig["result"].call_id == "call_abc"
    (ended_sig,) = recording["call_ended"]
    assert ended_sig["reason"] == "caller_hung_up" and ended_sig["call"].status == "completed"


async def test_core_heard_text_is_kept_verbatim() -> None:
    rec = make_recorder()
    rec.start()
    rec.turn(assistant("One two three four", interrupted=True, heard_ms=1, total_ms=2,
                       heard_text="One two"))
    await rec.aclose()
    (entry,) = await entries(rec.info.call_sid)
    assert entry.heard_text == "One two"


async def test_webhook_row_is_kept_and_updated() -> None:
    agent = await Agent.objects.acreate(name="Sales", slug="sales")
    received = timezone.now() - dt.timedelta(seconds=3)
    info = make_info(from_number="", direction="")
    await Call.objects.acreate(
        twilio_call_sid=info.call_sid, agent=agent, from_number="+15550001111",
        direction="outbound-api", webhook_received_at=received,
    )
    rec = make_recorder(info)
    rec.start()
    rec.stream_started(timezone.now())
    await rec.aclose()
    call = await Call.objects.aget(twilio_call_sid=info.call_sid)
    assert call.webhook_received_at == received
    assert call.agent_id == agent.pk and info.agent_pk == agent.pk
    assert call.from_number == "+15550001111" and call.direction == "outbound-api"
    assert call.status == "in-progress" and call.twilio_stream_sid == info.stream_sid
    assert call.model == "gpt-realtime-2.1"  # the agent has none: the VOICECONV model


async def test_ending_with_an_error_records_it() -> None:
    rec = make_recorder()
    rec.start()
    rec.stream_started(timezone.now())
    rec.ended("openai_error", error="server_error: boom", traceback="Traceback ...")
    await rec.aclose()
    call = await Call.objects.aget(twilio_call_sid=rec.info.call_sid)
    assert call.status == "failed" and call.end_reason == "openai_error"
    assert call.error == "server_error: boom" and call.traceback == "Traceback ..."


async def test_final_twilio_status_and_duration_are_not_overwritten() -> None:
    info = make_info()
    await Call.objects.acreate(
        twilio_call_sid=info.call_sid, status="completed", duration_seconds=42
    )
    rec = make_recorder(info)
    rec.start()
    rec.stream_started(timezone.now())
    rec.ended("agent_ended")
    await rec.aclose()
    call = await Call.objects.aget(twilio_call_sid=info.call_sid)
    assert (call.status, call.duration_seconds, call.end_reason) == (
        "completed", 42, "agent_ended",
    )


async def test_sequences_continue_after_an_earlier_recorder() -> None:
    info = make_info()
    first = make_recorder(info)
    first.start()
    first.turn(caller("one"))
    await first.aclose()
    second = make_recorder(info)
    second.start()
    second.turn(caller("two"))
    await second.aclose()
    assert [(e.sequence, e.text) for e in await entries(info.call_sid)] == [
        (1, "one"), (2, "two"),
    ]


# --- callbacks -----------------------------------------------------------------------------------


async def test_sync_and_async_callbacks_fire_alongside_persistence() -> None:
    heard: list[tuple[Any, ...]] = []
    info = make_info()

    def on_user(text: str) -> None:  # sync, one argument: runs in a thread
        assert threading.current_thread() is not threading.main_thread()
        heard.append(("user", text))

    async def on_assistant(text: str, call_info: CallInfo, context: Any) -> None:
        # The entry is already saved when the callback runs.
        assert text in await texts(call_info.call_sid)
        heard.append(("assistant", text, call_info, context))

    ctx = object()
    rec = make_recorder(info, context=ctx, on_user_message=on_user,
                        on_assistant_message=on_assistant)
    rec.start()
    rec.turn(caller("hello"))
    rec.turn(assistant("hi there"))
    rec.turn(TranscriptTurn(role="tool", text="no callback for tools"))
    await rec.aclose()
    assert heard == [("user", "hello"), ("assistant", "hi there", info, ctx)]
    assert await texts(info.call_sid) == ["hello", "hi there", "no callback for tools"]


def record_user_message(text: str, info: CallInfo) -> None:
    dotted_seen.append((text, info.call_sid))


dotted_seen: list[tuple[str, str]] = []


async def test_callbacks_may_be_dotted_paths() -> None:
    dotted_seen.clear()
    rec = make_recorder(on_user_message="tests.test_recorder.record_user_message")
    rec.start()
    rec.turn(caller("by path"))
    await rec.aclose()
    assert dotted_seen == [("by path", rec.info.call_sid)]


async def test_a_raising_callback_loses_nothing(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    def flaky(text: str) -> None:
        calls.append(text)
        if text == "first":
            raise RuntimeError("callback bug")

    rec = make_recorder(on_user_message=flaky)
    rec.start()
    for text in ("first", "second", "third"):
        rec.turn(caller(text))
    with caplog.at_level(logging.ERROR, logger="voiceconv.recorder"):
        await rec.aclose()
    assert await texts(rec.info.call_sid) == ["first", "second", "third"]
    assert calls == ["first", "second", "third"]
    assert any("callback" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_a_raising_signal_receiver_loses_nothing(caplog: pytest.LogCaptureFixture) -> None:
    def broken(sender: Any, **kwargs: Any) -> None:
        raise ValueError("receiver bug")

    signals.transcript_entry.connect(broken, sender=MediaStreamConsumer, weak=False)
    try:
        rec = make_recorder()
        rec.start()
        rec.turn(caller("a"))
        rec.turn(caller("b"))
        with caplog.at_level(logging.ERROR, logger="voiceconv.recorder"):
            await rec.aclose()
    finally:
        signals.transcript_entry.disconnect(broken, sender=MediaStreamConsumer)
    assert await texts(rec.info.call_sid) == ["a", "b"]
    mine = [r for r in caplog.records if r.name == "voiceconv.recorder"]
    assert sum("receiver bug" in r.getMessage() for r in mine) == 2


async def test_a_slow_callback_delays_neither_enqueue_nor_later_writes() -> None:
    release = threading.Event()
    entered = threading.Event()
    seen: list[str] = []

    def slow(text: str) -> None:
        entered.set()
        release.wait(5)  # stands in for a 1 s+ webhook call; released by the test
        time.sleep(1.0)
        seen.append(text)

    rec = make_recorder(on_user_message=slow)
    rec.start()
    rec.turn(caller("one"))
    await wait_for(lambda: sync_to_async(entered.is_set)())
    # The callback is blocked: enqueueing still returns at once ...
    t0 = time.perf_counter()
    for text in ("two", "three"):
        rec.turn(caller(text))
    rec.ended("caller_hung_up")
    enqueue_seconds = time.perf_counter() - t0
    assert enqueue_seconds < 0.1
    # ... and later entries and the end of the call are written while it is still blocked.
    sid = rec.info.call_sid
    await wait_for(lambda: Call.objects.filter(twilio_call_sid=sid, status="completed").aexists())
    assert await texts(sid) == ["one", "two", "three"]
    assert seen == []
    release.set()
    await rec.aclose()
    assert seen == ["one", "two", "three"]


# --- nothing lost --------------------------------------------------------------------------------


async def test_abrupt_hang_up_mid_answer_keeps_every_entry() -> None:
    """The caller hangs up while the assistant is talking: the consumer enqueues the final
    interrupted turn and the end in the same breath and closes the recorder at once."""
    rec = make_recorder()
    rec.start()
    rec.stream_started(timezone.now())
    for i in range(20):
        rec.turn(caller(f"question {i}"))
        rec.turn(assistant(f"answer {i}", latency_ms=500 + i))
    rec.turn(assistant("Let me read you the whole list of our opening hours", interrupted=True,
                       heard_ms=1500, total_ms=6000))
    rec.ended("caller_hung_up")
    assert rec.pending == 43  # nothing written yet: enqueueing does not touch the DB
    await rec.aclose()
    rows = await entries(rec.info.call_sid)
    assert len(rows) == 41
    assert [e.sequence for e in rows] == list(range(1, 42))
    assert rows[-1].interrupted and rows[-1].heard_text == "Let me read"
    call = await Call.objects.aget(twilio_call_sid=rec.info.call_sid)
    assert call.end_reason == "caller_hung_up" and call.status == "completed"


async def test_aclose_without_start_still_flushes() -> None:
    rec = make_recorder()
    rec.turn(caller("never started"))
    await rec.aclose()
    assert await texts(rec.info.call_sid) == ["never started"]
    await rec.aclose()  # idempotent


async def test_items_after_close_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    rec = make_recorder()
    rec.start()
    await rec.aclose()
    with caplog.at_level(logging.ERROR, logger="voiceconv.recorder"):
        rec.turn(caller("too late"))
    assert any("too late" in r.getMessage() for r in caplog.records)


async def test_recorder_lines_name_the_call(caplog: pytest.LogCaptureFixture) -> None:
    """The recorder logs through the shared per-call adapter: prefix and ``call_sid`` field."""
    rec = make_recorder()
    rec.start()
    await rec.aclose()
    with caplog.at_level(logging.ERROR, logger="voiceconv.recorder"):
        rec.turn(caller("too late"))
    (record,) = [r for r in caplog.records if "too late" in r.getMessage()]
    assert record.getMessage().startswith(f"call {rec.info.call_sid}: recorder already closed")
    assert record.call_sid == rec.info.call_sid  # type: ignore[attr-defined]


async def test_overflow_drops_loudly(caplog: pytest.LogCaptureFixture) -> None:
    rec = make_recorder(max_queue=3)
    with caplog.at_level(logging.ERROR, logger="voiceconv.recorder"):
        for i in range(5):
            rec.turn(caller(f"t{i}"))
    assert rec.dropped == 2
    dropped = [r.getMessage() for r in caplog.records if "queue full" in r.getMessage()]
    assert len(dropped) == 2 and "t3" in dropped[0] and "#2" in dropped[1]
    await rec.aclose()
    assert await texts(rec.info.call_sid) == ["t0", "t1", "t2"]


async def test_bad_input_is_logged_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    rec = make_recorder()
    rec.start()
    rec.turn(None)  # type: ignore[arg-type]
    rec.tool_invocation("not a result")
    rec.turn(caller("still here"))
    with caplog.at_level(logging.ERROR, logger="voiceconv.recorder"):
        await rec.aclose()
    assert await texts(rec.info.call_sid) == ["still here"]
    assert sum("could not save" in r.getMessage() for r in caplog.records) == 2


# --- the database goes away ----------------------------------------------------------------------


@sqlite_only
async def test_sqlite_locked_for_seconds_loses_nothing(
    sqlite_lock: SQLiteLock, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []
    rec = make_recorder(on_user_message=seen.append)
    rec.start()
    rec.stream_started(timezone.now())
    rec.turn(caller("before"))
    sid = rec.info.call_sid
    await wait_for(lambda: TranscriptEntry.objects.filter(call__twilio_call_sid=sid).aexists())

    await sync_to_async(sqlite_lock.acquire)()
    try:
        with caplog.at_level(logging.WARNING, logger="voiceconv.recorder"):
            for text in ("during 1", "during 2", "during 3"):
                rec.turn(caller(text))
            rec.usage(Usage(input_tokens=5, input_text_tokens=5))
            rec.ended("caller_hung_up")
            await asyncio.sleep(2.0)
            assert any("database unavailable" in r.getMessage() for r in caplog.records)
            # Still locked: nothing new got through, and nothing was dropped.
            assert rec.pending == 5 and rec.dropped == 0
    finally:
        await sync_to_async(sqlite_lock.release)()
    await rec.aclose()
    assert await texts(sid) == ["before", "during 1", "during 2", "during 3"]
    assert seen == ["before", "during 1", "during 2", "during 3"]
    call = await Call.objects.aget(twilio_call_sid=sid)
    assert call.input_tokens == 5 and call.end_reason == "caller_hung_up"
    assert any("database back" in r.getMessage() for r in caplog.records)


@sqlite_only
async def test_records_outlive_the_recorder_through_a_long_outage(
    sqlite_lock: SQLiteLock, caplog: pytest.LogCaptureFixture
) -> None:
    """What the recorder cannot write before it closes stays with the process-wide writer,
    which keeps retrying after the call has gone, and writes it when the database is back."""
    rec = make_recorder()
    rec.start()
    sid = rec.info.call_sid
    await sync_to_async(sqlite_lock.acquire)()
    with caplog.at_level(logging.WARNING, logger="voiceconv.recorder"):
        try:
            rec.turn(caller("kept one"))
            rec.turn(caller("kept two"))
            rec.ended("caller_hung_up")
            t0 = time.monotonic()
            await rec.aclose(timeout=0.6)
            assert time.monotonic() - t0 < 5
            assert rec.pending == 3 and rec.dropped == 0
            await asyncio.sleep(1.5)  # the outage outlasts the call
            assert rec.pending == 3
        finally:
            await sync_to_async(sqlite_lock.release)()
        await wait_for(lambda: _texts_are(sid, ["kept one", "kept two"]), timeout=20)
        await wait_for(lambda: _ended(sid), timeout=20)
    messages = [r.getMessage() for r in caplog.records]
    assert any("3 record(s) not written" in m and "keeps retrying" in m for m in messages)
    assert any("written after the call's recorder closed" in m for m in messages)
    assert not any(r.levelno >= logging.ERROR for r in caplog.records)


async def _texts_are(sid: str, expected: list[str]) -> bool:
    return await texts(sid) == expected


async def _ended(sid: str) -> bool:
    return await Call.objects.filter(twilio_call_sid=sid, end_reason="caller_hung_up").aexists()


@sqlite_only
async def test_at_exit_unwritten_records_are_logged_one_by_one(
    sqlite_lock: SQLiteLock, caplog: pytest.LogCaptureFixture
) -> None:
    writer = RecordWriter()
    rec = make_recorder(writer=writer)
    rec.start()
    await sync_to_async(sqlite_lock.acquire)()
    try:
        rec.turn(caller("never one"))
        rec.turn(caller("never two"))
        await asyncio.sleep(0)  # handed to the writer at the end of the loop's step
        with caplog.at_level(logging.ERROR, logger="voiceconv.recorder"):
            assert await sync_to_async(writer.stop)(timeout=0.5) == 2
    finally:
        await sync_to_async(sqlite_lock.release)()
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("before the process exited" in m and "never one" in m for m in messages)
    assert any("before the process exited" in m and "never two" in m for m in messages)


async def test_the_process_bound_drops_loudly(caplog: pytest.LogCaptureFixture) -> None:
    writer = RecordWriter(max_pending=2)
    rec = make_recorder(writer=writer)
    rec.start()
    with caplog.at_level(logging.ERROR, logger="voiceconv.recorder"):
        for i in range(3):
            rec.turn(caller(f"t{i}"))
        await asyncio.sleep(0)
    assert rec.dropped == 1 and writer.refused == 1
    dropped = [r.getMessage() for r in caplog.records if "RECORDS_MAX_PENDING" in r.getMessage()]
    assert len(dropped) == 1 and "t2" in dropped[0]
    await rec.aclose()
    assert await texts(rec.info.call_sid) == ["t0", "t1"]
    await sync_to_async(writer.stop)()


async def test_every_call_is_written_in_a_few_shared_transactions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import voiceconv.writer

    # No time budget per transaction here, so the count of batches does not depend on speed.
    monkeypatch.setattr(voiceconv.writer, "MAX_TRANSACTION_SECONDS", 3600.0)
    writer = RecordWriter()
    recorders = [make_recorder(writer=writer) for _ in range(20)]
    for rec in recorders:
        rec.start()
        rec.stream_started(timezone.now())
        for i in range(4):
            rec.turn(caller(f"{rec.info.call_sid} {i}"))
    await asyncio.gather(*(rec.aclose() for rec in recorders))
    assert writer.written == 20 * 5
    assert writer.batches <= 10  # one commit per tick for all calls, not one per record
    for rec in recorders:
        assert await texts(rec.info.call_sid) == [f"{rec.info.call_sid} {i}" for i in range(4)]
    await sync_to_async(writer.stop)()


# --- PostgreSQL: connections refused for a few seconds -------------------------------------------

postgres_only = pytest.mark.skipif(
    not DATABASE_URL.startswith(("postgres://", "postgresql://")),
    reason="needs DATABASE_URL pointing at PostgreSQL (CI sets it)",
)


class PostgresOutage:
    """Refuse new connections to the test database and kill the open ones, then let them back."""

    def __init__(self) -> None:
        import psycopg

        s = connection.settings_dict
        self.database = s["NAME"]
        self.admin = psycopg.connect(
            dbname="postgres", user=s["USER"] or None, password=s["PASSWORD"] or None,
            host=s["HOST"] or None, port=s["PORT"] or None, autocommit=True,
        )

    def begin(self) -> None:
        from psycopg import sql

        self.admin.execute(
            sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(
                sql.Identifier(self.database)
            )
        )
        self.admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            [self.database],
        )

    def end(self) -> None:
        from psycopg import sql

        self.admin.execute(
            sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(
                sql.Identifier(self.database)
            )
        )

    def close(self) -> None:
        self.admin.close()


@pytest.fixture
def reconnect_afterwards() -> Iterator[None]:
    """The outage kills the test's own connections too: drop them so Django reconnects."""
    yield
    connection.close()


@postgres_only
async def test_postgres_refusing_connections_loses_nothing(
    caplog: pytest.LogCaptureFixture, reconnect_afterwards: None
) -> None:
    outage = await sync_to_async(PostgresOutage)()
    rec = make_recorder()
    rec.start()
    rec.stream_started(timezone.now())
    rec.turn(caller("before"))
    sid = rec.info.call_sid
    await wait_for(lambda: TranscriptEntry.objects.filter(call__twilio_call_sid=sid).aexists())
    await sync_to_async(outage.begin)()
    try:
        with caplog.at_level(logging.WARNING, logger="voiceconv.recorder"):
            for text in ("during 1", "during 2"):
                rec.turn(caller(text))
            rec.turn(assistant("an answer", interrupted=True, heard_ms=100, total_ms=900))
            rec.usage(Usage(output_tokens=7, output_audio_tokens=7))
            rec.ended("caller_hung_up")
            await asyncio.sleep(3.0)
            assert any("database unavailable" in r.getMessage() for r in caplog.records)
            assert rec.pending == 5
    finally:
        await sync_to_async(outage.end)()
        await sync_to_async(outage.close)()
        # The test's own connections were terminated too: reconnect lazily.
        await sync_to_async(lambda: connections["default"].close())()
    await rec.aclose()
    assert await texts(sid) == ["before", "during 1", "during 2", "an answer"]
    call = await Call.objects.aget(twilio_call_sid=sid)
    assert call.output_audio_tokens == 7 and call.status == "completed"
