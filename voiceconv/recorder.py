"""The per-call recorder: persistence, signals and user callbacks, off the audio path.

:class:`CallRecorder` is "nothing lost" made concrete. The consumer calls its methods from the
audio path; each one only appends to an in-memory list and returns. At the end of the loop's
current step the records are handed, in order, to the process-wide writer
(:mod:`voiceconv.writer`), which writes every call's records in one transaction per tick and
retries while the database is unavailable. After a record is saved, its signal and user
callback run in a task of the call's own, so a slow or failing receiver never holds up the
writes that follow. :meth:`CallRecorder.aclose` waits for both, however the call ended; what
the database has not taken by its deadline stays with the process-wide writer, which keeps
retrying after the call is gone.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from django.db import transaction as db_transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from voiceconv import signals
from voiceconv.conf import voiceconv_settings
from voiceconv.events import CallInfo, TranscriptTurn, Usage
from voiceconv.transcripts import estimate_heard_text
from voiceconv.writer import RecordWriter, get_writer

logger = logging.getLogger("voiceconv.recorder")

#: Items a recorder holds at most; beyond that new items are dropped (and logged at ERROR).
MAX_QUEUE = 10_000
#: Longest time token usage waits in memory before it is written (it is also written at the end).
USAGE_FLUSH_SECONDS = 30.0
#: A callback or signal taking longer than this is logged at WARNING (seconds).
SLOW_CALLBACK_SECONDS = 2.0

_ERROR_REASONS = frozenset({"error", "openai_error"})


@dataclass(slots=True)
class _Item:
    """One queued write."""

    kind: str
    payload: Any
    at: dt.datetime = field(default_factory=timezone.now)

    def __repr__(self) -> str:
        return f"<{self.kind} at {self.at.isoformat()}: {self.payload!r}>"


@dataclass(slots=True)
class _Dispatch:
    """Signal (and callback) to run after an item was saved."""

    signal: Any
    kwargs: dict[str, Any]
    callback: Callable[..., Any] | None = None
    text: str = ""

    def __repr__(self) -> str:
        name = next((n for n, s in _SIGNAL_NAMES.items() if s is self.signal), "signal")
        return f"<{name} {self.kwargs!r}>"


_SIGNAL_NAMES = {
    "call_started": signals.call_started,
    "transcript_entry": signals.transcript_entry,
    "tool_invoked": signals.tool_invoked,
    "call_ended": signals.call_ended,
}


def _names(dispatches: list[_Dispatch]) -> str:
    counts = collections.Counter(
        next((n for n, s in _SIGNAL_NAMES.items() if s is job.signal), "signal")
        for job in dispatches
    )
    return ", ".join(f"{name} x{count}" for name, count in counts.items())


def _resolve_callback(value: Any) -> Callable[..., Any] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = import_string(value)
    if not callable(value):
        raise TypeError(f"callback {value!r} is not callable")
    callback: Callable[..., Any] = value
    return callback


def _positional_arity(fn: Callable[..., Any]) -> int:
    """How many positional arguments ``fn`` takes (3 for ``*args``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 2
    positional = 0
    for p in params:
        if p.kind is p.VAR_POSITIONAL:
            return 3
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            positional += 1
    return positional


class CallRecorder:
    """Persists one call's records in order, then fires signals and callbacks.

    ``sender`` is the consumer class (the ``sender`` of every signal). ``on_user_message`` and
    ``on_assistant_message`` are callables or dotted paths, sync (run in a thread) or async,
    taking ``(text)``, ``(text, info)`` or ``(text, info, context)``, where ``info`` is the
    call's :class:`~voiceconv.events.CallInfo` and ``context`` what the recorder was given
    (the consumer). They run for caller and assistant turns after the entry is saved.
    """

    def __init__(
        self,
        info: CallInfo,
        *,
        sender: type,
        context: Any = None,
        on_user_message: Callable[..., Any] | str | None = None,
        on_assistant_message: Callable[..., Any] | str | None = None,
        max_queue: int = MAX_QUEUE,
        writer: RecordWriter | None = None,
    ) -> None:
        self.info = info
        self.sender = sender
        self.context = context
        self.on_user_message = _resolve_callback(on_user_message)
        self.on_assistant_message = _resolve_callback(on_assistant_message)
        self.max_queue = max_queue
        #: Items dropped because the queue was full.
        self.dropped = 0
        self.writer: RecordWriter = writer if writer is not None else get_writer()
        #: Items not yet handed to the writer (it takes them at the end of the loop's step).
        self._items: list[_Item] = []
        self._dispatches: collections.deque[_Dispatch] = collections.deque()
        self._dispatch_ready = asyncio.Event()
        self._all_written = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handover_scheduled = False
        self._dispatcher: asyncio.Task[None] | None = None
        self._closing = False
        #: The recorder closed before the writer got everything in: what it writes later
        #: runs no signals or callbacks any more.
        self._detached = False
        self._late_written = 0
        self._closed = False
        self._call: Any = None
        # Token usage is summed in memory and written at most every USAGE_FLUSH_SECONDS and
        # at the end: one row update per response would be most of the writer's work.
        self._usage_batch: list[Usage] = []
        self._usage_flushed_at = time.monotonic()

    # -- enqueueing (the audio path) ---------------------------------------------------------

    def _put(self, kind: str, payload: Any) -> None:
        item = _Item(kind, payload)
        if self._closed:
            logger.error(
                "call %s: recorder already closed, item lost: %r", self.info.call_sid, item
            )
            return
        if len(self._items) + self.writer.pending_for(self) >= self.max_queue:
            self.dropped += 1
            logger.error(
                "call %s: recorder queue full (%d items), dropped item #%d: %r",
                self.info.call_sid, self.max_queue, self.dropped, item,
            )
            return
        self._items.append(item)
        if self._loop is not None and not self._handover_scheduled:
            self._handover_scheduled = True
            self._loop.call_soon(self._hand_over)

    def _hand_over(self) -> None:
        """Give the writer what was queued during this step of the loop, in order."""
        self._handover_scheduled = False
        if not self._items:
            return
        items, self._items = self._items, []
        self._all_written.clear()
        for item in self.writer.submit(self, items):
            self.dropped += 1
            logger.error(
                "call %s: %d records already wait for the database in this process "
                "(RECORDS_MAX_PENDING); dropped item #%d: %r",
                self.info.call_sid, self.writer.max_pending, self.dropped, item,
            )

    def stream_started(self, at: dt.datetime) -> None:
        """The media stream started at ``at``: the call is in progress."""
        self._put("stream_started", at)

    def first_audio(self, at: dt.datetime) -> None:
        """The first assistant audio was sent to the caller at ``at``."""
        self._put("first_audio", at)

    def milestone(self, name: str, at: dt.datetime) -> None:
        """A timed moment of the call's start (``session_ready``, ``first_audio_heard``)."""
        self._put("milestone", (name, at))

    def turn(self, turn: TranscriptTurn) -> None:
        """A finished turn: saved as the next transcript entry."""
        self._put("turn", turn)

    def usage(self, usage: Usage) -> None:
        """One ``response.done``'s token usage, added to the call's counters and cost.

        Written with the next flush: every ``USAGE_FLUSH_SECONDS`` and when the call ends.
        """
        self._usage_batch.append(usage)
        if time.monotonic() - self._usage_flushed_at >= USAGE_FLUSH_SECONDS:
            self._flush_usage()

    def _flush_usage(self) -> None:
        if self._usage_batch:
            batch, self._usage_batch = self._usage_batch, []
            self._put("usage", batch)
        self._usage_flushed_at = time.monotonic()

    def tool_invocation(self, result: Any) -> None:
        """A finished tool call (:class:`voiceconv.tools.runtime.ToolResult`)."""
        self._put("tool_invocation", result)

    def ended(self, reason: str, *, error: str = "", traceback: str = "") -> None:
        """The call ended for ``reason`` (a ``Call.EndReason`` value), optionally with an error."""
        self._flush_usage()
        self._put("ended", {"reason": reason, "error": error, "traceback": traceback})

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start handing records to the writer, and the dispatcher task, on the running loop."""
        if self._loop is not None:
            return
        self._loop = loop = asyncio.get_running_loop()
        self._dispatcher = loop.create_task(
            self._run_dispatcher(), name=f"voiceconv-dispatch-{self.info.call_sid}"
        )
        self._hand_over()

    @property
    def pending(self) -> int:
        """Items not yet written."""
        return len(self._items) + self.writer.pending_for(self)

    async def aclose(self, timeout: float = 15.0) -> None:
        """Write everything queued, run the pending signals and callbacks, then return.

        Gives up waiting at ``timeout`` seconds. Records the database has not taken by then
        stay with the process-wide writer, which keeps retrying them (a WARNING line says how
        many); signals and callbacks still undelivered are logged at ERROR with their content.
        """
        if self._closed:
            return
        self._flush_usage()
        self.start()
        assert self._dispatcher is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._closing = True
        self._hand_over()
        if not self.pending:
            self._all_written.set()
        else:
            try:
                await asyncio.wait_for(self._all_written.wait(), max(deadline - loop.time(), 0))
            except TimeoutError:
                self._detached = True
                logger.warning(
                    "call %s: %d record(s) not written before the recorder closed (database "
                    "unavailable); the process-wide writer keeps them and keeps retrying",
                    self.info.call_sid, self.pending,
                )
        self._dispatch_ready.set()
        if not await self._finish(self._dispatcher, deadline):
            for job in self._dispatches:
                logger.error(
                    "call %s: signal/callback not run before the recorder closed: %r",
                    self.info.call_sid, job,
                )
            self._dispatches.clear()
        self._detached = True
        self._closed = True

    @staticmethod
    async def _finish(task: asyncio.Task[None], deadline: float) -> bool:
        remaining = max(deadline - asyncio.get_running_loop().time(), 0.0)
        done, _ = await asyncio.wait({task}, timeout=remaining)
        if done:
            return True
        task.cancel()
        await asyncio.wait({task})
        return False

    # -- what the writer calls (in its thread) ------------------------------------------------

    def describe(self) -> str:
        return self.info.call_sid

    def apply(self, item: _Item) -> list[_Dispatch]:
        handler: Callable[[_Item], list[_Dispatch]] = getattr(self, f"_apply_{item.kind}")
        return handler(item)

    def forget_rows(self) -> None:
        self._call = None

    def written(self, count: int, dispatches: list[_Dispatch], remaining: int) -> None:
        if self._detached:
            self._written_late(count, dispatches, remaining)
            return
        loop = self._loop
        try:
            assert loop is not None
            loop.call_soon_threadsafe(self._on_written, dispatches, remaining)
        except (RuntimeError, AssertionError):  # the call's loop is gone
            self._written_late(count, dispatches, remaining)

    def _written_late(self, count: int, dispatches: list[_Dispatch], remaining: int) -> None:
        self._late_written += count
        logger.warning(
            "call %s: %d record(s) written after the call's recorder closed (%d so far, %d "
            "still waiting)%s",
            self.info.call_sid, count, self._late_written, remaining,
            f"; signals/callbacks not run any more: {_names(dispatches)}" if dispatches else "",
        )

    def _on_written(self, dispatches: list[_Dispatch], remaining: int) -> None:
        if self._detached:
            self._written_late(0, dispatches, remaining)
            return
        if dispatches:
            self._dispatches.extend(dispatches)
            self._dispatch_ready.set()
        if not self._items and self.writer.pending_for(self) == 0:
            self._all_written.set()

    # Each _apply_* runs in the writer's thread, inside its transaction, and returns the
    # dispatches to run once that transaction has committed.

    def _call_defaults(self) -> dict[str, Any]:
        from voiceconv.models import Agent

        info = self.info
        agent_id = info.agent_pk
        if agent_id is not None and not Agent.objects.filter(pk=agent_id).exists():
            agent_id = None
        return {
            "twilio_stream_sid": info.stream_sid or "",
            "twilio_account_sid": info.account_sid or "",
            "from_number": info.from_number or "",
            "to_number": info.to_number or "",
            "direction": info.direction or "",
            "custom_parameters": dict(info.custom_parameters or {}),
            "agent_id": agent_id,
        }

    def _call_row(self) -> Any:
        """The call's row, created from the :class:`CallInfo` if the webhook made none."""
        from voiceconv.models import Call

        if self._call is None:
            call, created = Call.objects.get_or_create(
                twilio_call_sid=self.info.call_sid, defaults=self._call_defaults()
            )
            if created:
                logger.info(
                    "call %s: no Call row from the webhook; created one", call.twilio_call_sid
                )
            self._call = call
            self.info.call_pk = call.pk
        return self._call

    def _apply_stream_started(self, item: _Item) -> list[_Dispatch]:
        from voiceconv.models import Call

        self._call = None
        call = self._call_row()
        updates: dict[str, Any] = {"stream_started_at": item.payload}
        if self.info.stream_sid:
            updates["twilio_stream_sid"] = self.info.stream_sid
        if call.status not in Call.FINAL_STATUSES:
            updates["status"] = Call.Status.IN_PROGRESS
        for key, value in self._call_defaults().items():
            if value and not getattr(call, key):
                updates[key] = value
        if not call.model:
            agent_model = ""
            agent_id = updates.get("agent_id", call.agent_id)
            if agent_id:
                from voiceconv.models import Agent

                agent_model = (
                    Agent.objects.filter(pk=agent_id).values_list("model", flat=True).first()
                    or ""
                )
            updates["model"] = agent_model or str(voiceconv_settings.MODEL)
        Call.objects.filter(pk=call.pk).update(**updates, updated_at=timezone.now())
        call.refresh_from_db()
        if self.info.agent_pk is None and call.agent_id:
            self.info.agent_pk = call.agent_id
        return [_Dispatch(signals.call_started, {"call": call, "info": self.info})]

    def _apply_first_audio(self, item: _Item) -> list[_Dispatch]:
        from voiceconv.models import Call

        call = self._call_row()
        if Call.objects.filter(pk=call.pk, first_audio_at__isnull=True).update(
            first_audio_at=item.payload
        ):
            call.first_audio_at = item.payload
        return []

    #: Milestones by the ``Call`` field that keeps the first of each.
    MILESTONE_FIELDS = {
        "session_ready": "session_ready_at",
        "first_audio_heard": "first_audio_heard_at",
    }

    def _apply_milestone(self, item: _Item) -> list[_Dispatch]:
        from voiceconv.models import Call

        name, at = item.payload
        field = self.MILESTONE_FIELDS.get(name)
        if field is None:
            return []
        call = self._call_row()
        if Call.objects.filter(pk=call.pk, **{f"{field}__isnull": True}).update(**{field: at}):
            setattr(call, field, at)
        return []

    def _apply_turn(self, item: _Item) -> list[_Dispatch]:
        from voiceconv.models import TranscriptEntry

        turn: TranscriptTurn = item.payload
        call = self._call_row()
        heard_text = ""
        if turn.interrupted:
            heard_text = (
                turn.heard_text
                if turn.heard_text is not None
                else estimate_heard_text(turn.text, turn.heard_ms, turn.total_ms)
            )
        fields = {
            "role": turn.role,
            "text": turn.text or "",
            "openai_item_id": turn.item_id or "",
            "offset_ms": turn.offset_ms,
            "latency_ms": turn.latency_ms,
            "interrupted": bool(turn.interrupted),
            "heard_ms": turn.heard_ms,
            "total_ms": turn.total_ms,
            "heard_text": heard_text or "",
        }
        # At its place in the conversation (a caller's turn is transcribed after the answer
        # began): see TranscriptEntry.objects.add_in_order.
        entry = TranscriptEntry.objects.add_in_order(call, **fields)
        callback = None
        role: str = turn.role
        if role == "caller":
            callback = self.on_user_message
        elif role == "assistant":
            callback = self.on_assistant_message
        return [
            _Dispatch(
                signals.transcript_entry,
                {"call": call, "entry": entry, "turn": turn},
                callback=callback,
                text=turn.text,
            )
        ]

    def _apply_usage(self, item: _Item) -> list[_Dispatch]:
        from voiceconv.models import Call

        call = self._call_row()
        with db_transaction.atomic():
            row = (
                Call.objects.select_for_update(of=("self",))
                .select_related("agent")
                .get(pk=call.pk)
            )
            for usage in item.payload:
                row.add_usage(usage)
            fields = [*Call.USAGE_FIELDS, "responses", "estimated_cost", "updated_at"]
            row.save(update_fields=fields)
        for name in (*Call.USAGE_FIELDS, "responses", "estimated_cost"):
            setattr(call, name, getattr(row, name))
        return []

    def _apply_tool_invocation(self, item: _Item) -> list[_Dispatch]:
        from voiceconv.models import ToolInvocation

        result = item.payload
        call = self._call_row()
        invocation = ToolInvocation.objects.create(call=call, **result.as_model_fields())
        return [
            _Dispatch(
                signals.tool_invoked, {"call": call, "invocation": invocation, "result": result}
            )
        ]

    def _apply_ended(self, item: _Item) -> list[_Dispatch]:
        from voiceconv.models import Call

        data = item.payload
        reason = str(data.get("reason") or "")
        call = self._call_row()
        call.refresh_from_db()
        updates: dict[str, Any] = {
            "end_reason": reason[:32],
            "ended_at": item.at,
            "updated_at": timezone.now(),
        }
        if data.get("error"):
            updates["error"] = str(data["error"])
        if data.get("traceback"):
            updates["traceback"] = str(data["traceback"])
        if call.status not in Call.FINAL_STATUSES:
            failed = reason in _ERROR_REASONS and bool(data.get("error"))
            updates["status"] = Call.Status.FAILED if failed else Call.Status.COMPLETED
        start = call.stream_started_at or call.webhook_received_at
        if call.duration_seconds is None and start is not None:
            updates["duration_seconds"] = round(max((item.at - start).total_seconds(), 0.0), 3)
        Call.objects.filter(pk=call.pk).update(**updates)
        call.refresh_from_db()
        return [_Dispatch(signals.call_ended, {"call": call, "reason": reason})]

    # -- the dispatcher task ------------------------------------------------------------------

    async def _run_dispatcher(self) -> None:
        while True:
            while self._dispatches:
                job = self._dispatches[0]
                await self._dispatch(job)
                self._dispatches.popleft()
            if self._closing and (self._all_written.is_set() or self._detached):
                return
            self._dispatch_ready.clear()
            await self._dispatch_ready.wait()

    async def _dispatch(self, job: _Dispatch) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            responses = await job.signal.asend_robust(sender=self.sender, **job.kwargs)
        except Exception:
            logger.exception("call %s: sending %r failed", self.info.call_sid, job)
            responses = []
        for receiver, response in responses:
            if isinstance(response, Exception):
                logger.error(
                    "call %s: signal receiver %r raised %s: %s",
                    self.info.call_sid, receiver, type(response).__name__, response,
                )
        if job.callback is not None:
            await self._run_callback(job.callback, job.text)
        elapsed = loop.time() - started
        if elapsed > SLOW_CALLBACK_SECONDS:
            logger.warning(
                "call %s: receivers/callbacks for %r took %.1f s", self.info.call_sid, job, elapsed
            )

    async def _run_callback(self, fn: Callable[..., Any], text: str) -> None:
        args: tuple[Any, ...] = (text, self.info, self.context)[: max(_positional_arity(fn), 1)]
        try:
            if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
                getattr(fn, "__call__", None)  # noqa: B004
            ):
                await fn(*args)
            else:
                result = await sync_to_async(fn, thread_sensitive=False)(*args)
                if inspect.isawaitable(result):
                    await result
        except Exception:
            logger.exception("call %s: callback %r failed", self.info.call_sid, fn)
