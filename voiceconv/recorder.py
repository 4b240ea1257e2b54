"""The per-call recorder: persistence, signals and user callbacks, off the audio path.

:class:`CallRecorder` is "nothing lost" made concrete. The consumer calls its methods from the
audio path; each one only appends to an in-memory list and returns. At the end of the loop's
current step the records are handed, in order, to the process-wide writer
(:mod:`voiceconv.writer`), which writes every call's records in one transaction per tick and
retries while the database is unavailable. After a record is saved, its signal and user
callback run in a task of the call's own, so a slow or failing receiver never holds up the
writes that follow. :meth:`CallRecorder.aclose` waits for both, however the call ended; what
the database has not taken by its deadline stays with the process-wide writer, which keeps
retrying after the call is gone. What each record does in the database is
:mod:`voiceconv.recorder_rows`.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.utils.module_loading import import_string

from voiceconv.calllog import CallLog
from voiceconv.events import CallInfo, TranscriptTurn, Usage
from voiceconv.recorder_rows import CallRows, Dispatch, Item, signal_names
from voiceconv.writer import RecordWriter, get_writer

logger = logging.getLogger("voiceconv.recorder")

#: Items a recorder holds at most; beyond that new items are dropped (and logged at ERROR).
MAX_QUEUE = 10_000
#: Longest time token usage waits in memory before it is written (it is also written at the end).
USAGE_FLUSH_SECONDS = 30.0
#: A callback or signal taking longer than this is logged at WARNING (seconds).
SLOW_CALLBACK_SECONDS = 2.0

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


class CallRecorder(CallRows):
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
        self.log = CallLog(logger, info.call_sid)
        self.sender = sender
        self.context = context
        self.on_user_message = _resolve_callback(on_user_message)
        self.on_assistant_message = _resolve_callback(on_assistant_message)
        self.max_queue = max_queue
        #: Items dropped because the queue was full.
        self.dropped = 0
        self.writer: RecordWriter = writer if writer is not None else get_writer()
        #: Items not yet handed to the writer (it takes them at the end of the loop's step).
        self._items: list[Item] = []
        self._dispatches: collections.deque[Dispatch] = collections.deque()
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
        item = Item(kind, payload)
        if self._closed:
            self.log.error("recorder already closed, item lost: %r", item)
            return
        if len(self._items) + self.writer.pending_for(self) >= self.max_queue:
            self.dropped += 1
            self.log.error(
                "recorder queue full (%d items), dropped item #%d: %r",
                self.max_queue, self.dropped, item,
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
            self.log.error(
                "%d records already wait for the database in this process "
                "(RECORDS_MAX_PENDING); dropped item #%d: %r",
                self.writer.max_pending, self.dropped, item,
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

    def session_seconds(self, seconds: float, paused_seconds: float | None = None) -> None:
        """The speech session's cumulative billable seconds so far (GPT-Live), and of them those
        billed at the paused rate: the call keeps the largest total reported, and its cost."""
        paused = None if paused_seconds is None else float(paused_seconds)
        self._put("session_seconds", (float(seconds), paused))

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
                self.log.warning(
                    "%d record(s) not written before the recorder closed (database "
                    "unavailable); the process-wide writer keeps them and keeps retrying",
                    self.pending,
                )
        self._dispatch_ready.set()
        if not await self._finish(self._dispatcher, deadline):
            for job in self._dispatches:
                self.log.error("signal/callback not run before the recorder closed: %r", job)
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

    def written(self, count: int, dispatches: list[Dispatch], remaining: int) -> None:
        if self._detached:
            self._written_late(count, dispatches, remaining)
            return
        loop = self._loop
        try:
            assert loop is not None
            loop.call_soon_threadsafe(self._on_written, dispatches, remaining)
        except (RuntimeError, AssertionError):  # the call's loop is gone
            self._written_late(count, dispatches, remaining)

    def _written_late(self, count: int, dispatches: list[Dispatch], remaining: int) -> None:
        self._late_written += count
        self.log.warning(
            "%d record(s) written after the call's recorder closed (%d so far, %d "
            "still waiting)%s",
            count, self._late_written, remaining,
            f"; signals/callbacks not run any more: {signal_names(dispatches)}"
            if dispatches else "",
        )

    def _on_written(self, dispatches: list[Dispatch], remaining: int) -> None:
        if self._detached:
            self._written_late(0, dispatches, remaining)
            return
        if dispatches:
            self._dispatches.extend(dispatches)
            self._dispatch_ready.set()
        if not self._items and self.writer.pending_for(self) == 0:
            self._all_written.set()

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

    async def _dispatch(self, job: Dispatch) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            responses = await job.signal.asend_robust(sender=self.sender, **job.kwargs)
        except Exception:
            self.log.exception("sending %r failed", job)
            responses = []
        for receiver, response in responses:
            if isinstance(response, Exception):
                self.log.error(
                    "signal receiver %r raised %s: %s",
                    receiver, type(response).__name__, response,
                )
        if job.callback is not None:
            await self._run_callback(job.callback, job.text)
        elapsed = loop.time() - started
        if elapsed > SLOW_CALLBACK_SECONDS:
            self.log.warning("receivers/callbacks for %r took %.1f s", job, elapsed)

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
            self.log.exception("callback %r failed", fn)
