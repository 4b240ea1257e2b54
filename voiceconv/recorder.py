"""The per-call writer: persistence, signals and user callbacks, off the audio path.

:class:`CallRecorder` is "nothing lost" made concrete. The consumer calls its methods from the
audio path; each one only appends to an in-memory queue and returns. One writer task per call
applies the items in order through the ORM (in a worker thread), retrying the same item while
the database is unavailable. After an item is saved, its signal and user callback are handed
to a second task, so a slow or failing receiver never holds up the writes that follow.
:meth:`CallRecorder.aclose` flushes both queues, however the call ended.
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
from channels.db import database_sync_to_async
from django.db import DataError, IntegrityError, NotSupportedError, ProgrammingError
from django.db import transaction as db_transaction
from django.db.utils import DatabaseError
from django.utils import timezone
from django.utils.module_loading import import_string

from voiceconv import signals
from voiceconv.conf import voiceconv_settings
from voiceconv.events import CallInfo, TranscriptTurn, Usage
from voiceconv.transcripts import estimate_heard_text

logger = logging.getLogger("voiceconv.recorder")

#: Items a recorder holds at most; beyond that new items are dropped (and logged at ERROR).
MAX_QUEUE = 10_000
#: Retry back-off while the database is unavailable (seconds).
RETRY_MIN_DELAY = 0.1
#: Longest time token usage waits in memory before it is written (it is also written at the end).
USAGE_FLUSH_SECONDS = 30.0
RETRY_MAX_DELAY = 2.0
#: A callback or signal taking longer than this is logged at WARNING (seconds).
SLOW_CALLBACK_SECONDS = 2.0

#: Database errors that a retry will not fix (bad data, missing table): logged and skipped.
_PERMANENT_DB_ERRORS = (DataError, IntegrityError, ProgrammingError, NotSupportedError)
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


def _resolve_callback(value: Any) -> Callable[..., Any] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = import_string(value)
    if not callable(value):
        raise TypeError(f"callback {value!r} is not callable")
    return value


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
    ) -> None:
        self.info = info
        self.sender = sender
        self.context = context
        self.on_user_message = _resolve_callback(on_user_message)
        self.on_assistant_message = _resolve_callback(on_assistant_message)
        self.max_queue = max_queue
        #: Items dropped because the queue was full.
        self.dropped = 0
        self._items: collections.deque[_Item] = collections.deque()
        self._dispatches: collections.deque[_Dispatch] = collections.deque()
        self._items_ready = asyncio.Event()
        self._dispatch_ready = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False
        self._call: Any = None
        self._next_sequence: int | None = None
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
        if len(self._items) >= self.max_queue:
            self.dropped += 1
            logger.error(
                "call %s: recorder queue full (%d items), dropped item #%d: %r",
                self.info.call_sid, self.max_queue, self.dropped, item,
            )
            return
        self._items.append(item)
        self._items_ready.set()

    def stream_started(self, at: dt.datetime) -> None:
        """The media stream started at ``at``: the call is in progress."""
        self._put("stream_started", at)

    def first_audio(self, at: dt.datetime) -> None:
        """The first assistant audio was sent to the caller at ``at``."""
        self._put("first_audio", at)

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
        """Start the writer and dispatcher tasks on the running loop."""
        if self._writer is not None:
            return
        loop = asyncio.get_running_loop()
        sid = self.info.call_sid
        self._writer = loop.create_task(self._run_writer(), name=f"voiceconv-writer-{sid}")
        self._dispatcher = loop.create_task(
            self._run_dispatcher(), name=f"voiceconv-dispatch-{sid}"
        )

    @property
    def pending(self) -> int:
        """Items not yet written."""
        return len(self._items)

    async def aclose(self, timeout: float = 15.0) -> None:
        """Write everything queued, run the pending signals and callbacks, then return.

        Gives up at ``timeout`` seconds; whatever is still undelivered then is logged at ERROR
        with its content.
        """
        if self._closed:
            return
        self._flush_usage()
        self.start()
        assert self._writer is not None and self._dispatcher is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._closing = True
        self._items_ready.set()
        if not await self._finish(self._writer, deadline):
            for item in self._items:
                logger.error(
                    "call %s: not written before the recorder closed: %r", self.info.call_sid, item
                )
            self._items.clear()
        self._dispatch_ready.set()
        if not await self._finish(self._dispatcher, deadline):
            for job in self._dispatches:
                logger.error(
                    "call %s: signal/callback not run before the recorder closed: %r",
                    self.info.call_sid, job,
                )
            self._dispatches.clear()
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

    # -- the writer task ----------------------------------------------------------------------

    async def _run_writer(self) -> None:
        while True:
            while self._items:
                item = self._items[0]
                await self._apply_with_retry(item)
                self._items.popleft()
            if self._closing:
                return
            self._items_ready.clear()
            await self._items_ready.wait()

    async def _apply_with_retry(self, item: _Item) -> None:
        handler = getattr(self, f"_apply_{item.kind}")
        delay = RETRY_MIN_DELAY
        attempts = 0
        while True:
            attempts += 1
            try:
                dispatches = await database_sync_to_async(handler, thread_sensitive=False)(item)
            except _PERMANENT_DB_ERRORS as exc:
                logger.error(
                    "call %s: could not save %r: %s: %s",
                    self.info.call_sid, item, type(exc).__name__, exc,
                )
                return
            except DatabaseError as exc:
                if attempts == 1 or attempts % 30 == 0:
                    logger.warning(
                        "call %s: database unavailable (%s: %s); retrying %s "
                        "(attempt %d, %d item(s) waiting)",
                        self.info.call_sid, type(exc).__name__, str(exc).strip(), item.kind,
                        attempts, len(self._items),
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_DELAY)
                continue
            except Exception:
                logger.exception("call %s: could not save %r", self.info.call_sid, item)
                return
            if attempts > 1:
                logger.warning(
                    "call %s: database back, %s saved after %d attempts",
                    self.info.call_sid, item.kind, attempts,
                )
            if dispatches:
                self._dispatches.extend(dispatches)
                self._dispatch_ready.set()
            return

    # Each _apply_* runs in a worker thread and returns the dispatches to run afterwards.

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

    def _apply_turn(self, item: _Item) -> list[_Dispatch]:
        from django.db.models import Max

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
        for _attempt in range(5):
            if self._next_sequence is None:
                last = call.transcript_entries.aggregate(m=Max("sequence"))["m"]
                self._next_sequence = (last or 0) + 1
            sequence = self._next_sequence
            try:
                with db_transaction.atomic():
                    entry = TranscriptEntry.objects.create(call=call, sequence=sequence, **fields)
            except IntegrityError:
                existing = TranscriptEntry.objects.filter(call=call, sequence=sequence).first()
                if existing is not None and all(
                    getattr(existing, k) == v for k, v in fields.items()
                ):
                    entry = existing  # our own earlier attempt did commit
                else:
                    self._next_sequence = None  # another writer used it: recount
                    continue
            self._next_sequence = sequence + 1
            break
        else:
            raise IntegrityError(f"no free transcript sequence for call {call.pk}")
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
            if self._closing and (self._writer is None or self._writer.done()):
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
