"""The process-wide record writer: every call's records, one transaction per tick.

Each call's :class:`~voiceconv.recorder.CallRecorder` hands its records (transcript turns,
usage, tool invocations, the call's start and end) to the one :class:`RecordWriter` of the
process. The writer runs in a thread of its own with its own database connection: it waits for
records, gathers what every call handed over during one tick (``TICK_SECONDS``), and writes it
in **one transaction**, each record in a savepoint, each call's records in the order they were
handed over. One commit per tick for the whole process replaces a commit per record per call
(on SQLite most of that cost was the commit's fsync), and no worker-thread hop is made per
record.

Nothing is dropped silently:

- a record the database refuses for good (bad data, a missing table) is logged at ERROR with
  its content and skipped, alone: its savepoint is rolled back, the rest of the batch commits;
- while the database is unavailable (connection refused, locked, the commit failing), the whole
  batch is kept and retried with a back-off, for as long as the process runs; a WARNING line
  says so (the first time and every 30th attempt) and another when it is back;
- a call whose recorder closes during an outage leaves its records with the writer, which keeps
  retrying them after the call has ended (rule: records survive a long outage at the end of a
  call). Their signals and callbacks are not run any more (the call is gone); the log says so;
- memory is bounded: at most ``VOICECONV["RECORDS_MAX_PENDING"]`` records wait in the process;
  beyond that new records are refused, each one logged at ERROR with its content;
- at interpreter exit the writer makes a last attempt for ``STOP_TIMEOUT`` seconds and logs at
  ERROR every record it could still not write.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
from typing import Any, Protocol

from django.db import (
    DatabaseError,
    DataError,
    IntegrityError,
    NotSupportedError,
    ProgrammingError,
    close_old_connections,
    connections,
)
from django.db import transaction as db_transaction

from voiceconv.conf import voiceconv_settings

logger = logging.getLogger("voiceconv.recorder")

#: How long the writer gathers records after the first one arrives (seconds).
TICK_SECONDS = 0.05
#: Most records written in one transaction.
MAX_BATCH = 1000
#: A transaction takes no more records once it has run this long (seconds): on SQLite it
#: holds the database's one write lock, which the webhooks and stream starts also need.
MAX_TRANSACTION_SECONDS = 0.02
#: The same bound elsewhere (PostgreSQL: row locks only, nobody else waits on the batch).
MAX_TRANSACTION_SECONDS_MVCC = 0.5
#: Pause between batches while a backlog remains, on SQLite (lets the other writers in).
BACKLOG_PAUSE_SQLITE = 0.005
#: Retry back-off while the database is unavailable (seconds).
RETRY_MIN_DELAY = 0.1
RETRY_MAX_DELAY = 2.0
#: The last attempt at interpreter exit gives up after this many seconds.
STOP_TIMEOUT = 10.0

#: Database errors that a retry will not fix (bad data, missing table): logged and skipped.
PERMANENT_DB_ERRORS = (DataError, IntegrityError, ProgrammingError, NotSupportedError)


class Source(Protocol):
    """What the writer needs of a call's recorder."""

    def apply(self, item: Any) -> list[Any]:
        """Write one record (in the writer's thread); returns what to dispatch afterwards."""

    def forget_rows(self) -> None:
        """A batch was rolled back: drop what was cached from the database."""

    def written(self, count: int, dispatches: list[Any], remaining: int) -> None:
        """``count`` records were written (or skipped); called in the writer's thread."""

    def describe(self) -> str:
        """The call's id, for log lines."""


class RecordWriter:
    """One thread writing every call's records in batches, retrying while the database is away.

    ``max_pending`` bounds the records held (``VOICECONV["RECORDS_MAX_PENDING"]`` by default).
    """

    def __init__(self, *, tick: float = TICK_SECONDS, max_pending: int | None = None) -> None:
        self.tick = tick
        self._max_pending = max_pending
        self._cond = threading.Condition()
        self._queues: dict[Source, list[Any]] = {}
        self._pending = 0
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._stopping = False
        self._stop_deadline = 0.0
        #: Records refused because the process already held ``max_pending``.
        self.refused = 0
        #: Batches committed, and records written (for the benchmark and the tests).
        self.batches = 0
        self.written = 0

    # -- the callers' side (any thread) -------------------------------------------------------

    @property
    def max_pending(self) -> int:
        if self._max_pending is not None:
            return self._max_pending
        return voiceconv_settings.RECORDS_MAX_PENDING

    def submit(self, source: Source, items: list[Any]) -> list[Any]:
        """Take ``items`` (in order) for writing; returns those refused for want of room."""
        if not items:
            return []
        with self._cond:
            room = max(self.max_pending - self._pending, 0)
            accepted, refused = items[:room], items[room:]
            if accepted:
                self._queues.setdefault(source, []).extend(accepted)
                self._pending += len(accepted)
                self._ensure_thread()
                self._cond.notify()
            self.refused += len(refused)
        return refused

    def pending_for(self, source: Source) -> int:
        """Records of ``source`` not yet written."""
        with self._cond:
            return len(self._queues.get(source, ()))

    @property
    def pending(self) -> int:
        """Records of every call not yet written."""
        return self._pending

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """Write what is pending (trying for ``timeout`` seconds), stop the thread.

        Every record still unwritten then is logged at ERROR; returns how many.
        """
        with self._cond:
            thread = self._thread
            self._stopping = True
            self._stop_deadline = time.monotonic() + timeout
            self._cond.notify_all()
        if thread is not None:
            thread.join(timeout + 1.0)
        with self._cond:
            left = [(s, item) for s, items in self._queues.items() for item in items]
            self._queues.clear()
            self._pending = 0
            self._thread = None
            self._stopping = False
        for source, item in left:
            logger.error(
                "call %s: not written before the process exited: %r", source.describe(), item
            )
        return len(left)

    def _ensure_thread(self) -> None:
        # Under self._cond. A forked child (pre-fork servers) starts a thread of its own.
        thread = self._thread
        if thread is not None and thread.is_alive() and self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="voiceconv-writer", daemon=True)
        self._thread.start()

    # -- the writer thread --------------------------------------------------------------------

    def _run(self) -> None:
        delay = RETRY_MIN_DELAY
        attempts = 0
        backlog = False
        try:
            while True:
                with self._cond:
                    while not self._queues and not self._stopping:
                        self._cond.wait()
                    if not self._queues:
                        return
                    stopping = self._stopping
                if not stopping and not attempts:
                    if backlog:
                        # A batch was cut short by the transaction bound: go on at once (on
                        # SQLite after a short pause, so the webhooks get the write lock).
                        if self._single_writer():
                            time.sleep(BACKLOG_PAUSE_SQLITE)
                    else:
                        # Gather what the other calls hand over meanwhile.
                        time.sleep(self.tick)
                batch = self._take()
                try:
                    try:
                        results = self._write(batch)
                    except PERMANENT_DB_ERRORS as exc:
                        # Refused at commit (a deferred constraint): find the record alone.
                        logger.warning(
                            "a batch of %d record(s) was refused at commit (%s: %s); writing "
                            "them one by one", sum(len(i) for _, i in batch),
                            type(exc).__name__, exc,
                        )
                        self._forget(batch)
                        results = self._write(batch, each=True)
                except Exception as exc:  # DatabaseError, or no database access at all
                    attempts += 1
                    self._forget(batch)
                    if attempts == 1 or attempts % 30 == 0:
                        logger.warning(
                            "database unavailable (%s: %s); retrying %d record(s) of %d call(s) "
                            "(attempt %d, %d record(s) waiting in the process)",
                            type(exc).__name__, str(exc).strip(),
                            sum(len(items) for _, items in batch), len(batch), attempts,
                            self._pending,
                        )
                    with self._cond:
                        if self._stopping and time.monotonic() >= self._stop_deadline:
                            return
                        self._cond.wait(delay)
                    delay = min(delay * 2, RETRY_MAX_DELAY)
                    continue
                if attempts:
                    logger.warning(
                        "database back: %d record(s) written after %d attempt(s)",
                        sum(count for count, _ in results), attempts + 1,
                    )
                attempts = 0
                delay = RETRY_MIN_DELAY
                backlog = sum(count for count, _ in results) < sum(len(i) for _, i in batch)
                self._done(batch, results)
        except BaseException:  # pragma: no cover - a bug in the writer itself
            logger.exception("the record writer failed; records left: %d", self._pending)
            raise

    def _take(self) -> list[tuple[Source, list[Any]]]:
        """A prefix of each call's records, oldest calls first, up to MAX_BATCH in all."""
        batch: list[tuple[Source, list[Any]]] = []
        budget = MAX_BATCH
        with self._cond:
            for source, items in self._queues.items():
                if budget <= 0:
                    break
                chunk = items[:budget]
                batch.append((source, chunk))
                budget -= len(chunk)
        return batch

    def _forget(self, batch: list[tuple[Source, list[Any]]]) -> None:
        for source, _items in batch:
            source.forget_rows()
        with contextlib.suppress(Exception):
            connections.close_all()  # this thread's connections: reconnect next time

    def _write(
        self, batch: list[tuple[Source, list[Any]]], *, each: bool = False
    ) -> list[tuple[int, list[Any]]]:
        """One transaction for (a prefix of) the batch (``each``: one per record); returns how
        many records of each call were written and their dispatches. Raises if the batch must
        be retried."""
        close_old_connections()
        try:
            results: list[tuple[int, list[Any]]] = []
            bound = MAX_TRANSACTION_SECONDS if self._single_writer() else (
                MAX_TRANSACTION_SECONDS_MVCC)
            deadline = time.monotonic() + bound
            with db_transaction.atomic() if not each else contextlib.nullcontext():
                for source, items in batch:
                    dispatches: list[Any] = []
                    count = 0
                    for item in items:
                        if count and not each and time.monotonic() > deadline:
                            break
                        dispatches.extend(self._apply_one(source, item))
                        count += 1
                    results.append((count, dispatches))
                    if not each and time.monotonic() > deadline:
                        break
            return results
        finally:
            close_old_connections()

    @staticmethod
    def _single_writer() -> bool:
        """The database takes one writer at a time (SQLite): keep its transactions short."""
        return connections["default"].vendor == "sqlite"

    @staticmethod
    def _apply_one(source: Source, item: Any) -> list[Any]:
        try:
            # A savepoint (a transaction of its own when writing one by one): a refused
            # record is skipped alone.
            with db_transaction.atomic():
                return source.apply(item)
        except PERMANENT_DB_ERRORS as exc:
            source.forget_rows()  # what it cached may have been rolled back with it
            logger.error(
                "call %s: could not save %r: %s: %s",
                source.describe(), item, type(exc).__name__, exc,
            )
        except DatabaseError:
            raise  # the database is away: the whole batch is retried
        except Exception:
            source.forget_rows()
            logger.exception("call %s: could not save %r", source.describe(), item)
        return []

    def _done(
        self, batch: list[tuple[Source, list[Any]]], results: list[tuple[int, list[Any]]]
    ) -> None:
        done: list[tuple[Source, int, list[Any], int]] = []
        with self._cond:
            for (source, _items), (count, dispatches) in zip(batch, results, strict=False):
                queue = self._queues.get(source, [])
                del queue[:count]
                if not queue:
                    self._queues.pop(source, None)
                self._pending -= count
                done.append((source, count, dispatches, len(queue)))
            self.batches += 1
            self.written += sum(n for _, n, _, _ in done)
        for source, count, dispatches, remaining in done:
            try:
                source.written(count, dispatches, remaining)
            except Exception:
                logger.exception("call %s: after writing", source.describe())


_writer: RecordWriter | None = None
_writer_lock = threading.Lock()


def get_writer() -> RecordWriter:
    """The process's writer (made on first use; at exit it writes what is left, or logs it)."""
    global _writer
    if _writer is None:
        with _writer_lock:
            if _writer is None:
                _writer = RecordWriter()
                atexit.register(_writer.stop)
    return _writer
