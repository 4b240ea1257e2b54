"""The incoming-call webhook's record, written off the response path.

Twilio waits for the webhook's TwiML before the caller hears anything, and calls come in
bursts. So the webhook answers from the request alone (the stream's URL, its token, the
forwarded call facts) and hands the ``Call`` row to the process-wide
:class:`~voiceconv.writer.RecordWriter`: it is written in the writer's next transaction with
every call's other records (retried while the database is away, like them), and
:data:`voiceconv.signals.call_received` is sent once it is, on the event loop the webhook ran
on. The agent is picked where the row is written (:meth:`CallManager.record_webhook`) and
again by the stream's claim (:meth:`CallManager.claim_stream`), which creates the row itself
when it gets there first; the two agree because both pick it the same way, and the later one
never undoes what the earlier one recorded.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from voiceconv import signals
from voiceconv.writer import get_writer

logger = logging.getLogger("voiceconv.views")


@dataclass(frozen=True, slots=True)
class WebhookRecord:
    """What the incoming-call webhook knows of a call, and when it was received."""

    call_sid: str
    account_sid: str
    from_number: str
    to_number: str
    direction: str
    status: str
    received_at: dt.datetime


@dataclass(frozen=True, slots=True)
class _Item:
    record: WebhookRecord
    loop: asyncio.AbstractEventLoop | None


@dataclass(frozen=True, slots=True)
class _Written:
    call: Any
    agent: Any
    loop: asyncio.AbstractEventLoop | None


class WebhookRecords:
    """The writer's source for webhook rows (one per process, see :func:`record`)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def submit(self, record: WebhookRecord) -> bool:
        """Hand ``record`` to the writer; False (and an ERROR line) when it has no room."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        refused = get_writer().submit(self, [_Item(record, loop)])
        if refused:
            logger.error("call %s: the incoming call could not be recorded (the writer is "
                         "full); its stream will record it: %r", record.call_sid, record)
        return not refused

    # -- the writer's side (its thread) --------------------------------------------------------

    def apply(self, item: _Item) -> list[_Written]:
        # Imported here, not at the top: the models need Django's app registry, and the
        # views that import this module are importable before it is ready.
        from voiceconv.models import Call

        r = item.record
        call, agent = Call.objects.record_webhook(
            r.call_sid, account_sid=r.account_sid, from_number=r.from_number,
            to_number=r.to_number, direction=r.direction, status=r.status,
            received_at=r.received_at,
        )
        return [_Written(call, agent, item.loop)]

    def forget_rows(self) -> None:
        """Nothing is cached between records."""

    def written(self, count: int, dispatches: list[_Written], remaining: int) -> None:
        for done in dispatches:
            loop = done.loop
            if loop is not None and loop.is_running():
                try:
                    loop.call_soon_threadsafe(self._spawn, done)
                    continue
                except RuntimeError:  # closed meanwhile
                    pass
            # No event loop to send on (a test client's, gone): send from this thread.
            _log_failures(signals.call_received.send_robust(
                sender=type(done.call), call=done.call, agent=done.agent))

    def describe(self) -> str:
        return "incoming-call webhooks"

    # -- back on the event loop ------------------------------------------------------------------

    def _spawn(self, done: _Written) -> None:
        task = asyncio.ensure_future(self._send(done))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, done: _Written) -> None:
        _log_failures(await signals.call_received.asend_robust(
            sender=type(done.call), call=done.call, agent=done.agent))


def _log_failures(responses: list[tuple[Any, Any]]) -> None:
    for receiver, response in responses:
        if isinstance(response, Exception):
            logger.error("signal receiver %r raised %s: %s", receiver,
                         type(response).__name__, response)


#: The process's webhook records (the writer keeps one queue per source).
webhook_records = WebhookRecords()


def record(record: WebhookRecord) -> bool:
    """Record the incoming call off the response path (see the module's docstring)."""
    return webhook_records.submit(record)
