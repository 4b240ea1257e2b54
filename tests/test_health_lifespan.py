"""The draining middleware answers ASGI lifespan, and writes queued records at shutdown."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from voiceconv import health


class QueuedWriter:
    """Stands in for the process-wide writer: records what shutdown asked of it."""

    def __init__(self, pending: int) -> None:
        self.pending = pending
        self.stopped_with: list[float] = []

    def stop(self, timeout: float) -> int:
        self.stopped_with.append(timeout)
        self.pending = 0
        return 0


async def run_lifespan(app: Any) -> list[dict[str, Any]]:
    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: list[dict[str, Any]] = []
    for message in ({"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}):
        incoming.put_nowait(message)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(app({"type": "lifespan"}, incoming.get, send), 10)
    return sent


async def inner_app(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError(f"the wrapped application got a {scope['type']} scope")


async def test_shutdown_writes_the_queued_records_before_it_completes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writer = QueuedWriter(pending=3)
    monkeypatch.setattr(health, "get_writer", lambda: writer)
    sent = await run_lifespan(health.DrainingMiddleware(inner_app))
    assert sent == [{"type": "lifespan.startup.complete"},
                    {"type": "lifespan.shutdown.complete"}]
    assert writer.stopped_with == [health.SHUTDOWN_WRITE_TIMEOUT]
    assert writer.pending == 0


async def test_shutdown_with_nothing_queued_does_not_stop_the_writer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writer = QueuedWriter(pending=0)
    monkeypatch.setattr(health, "get_writer", lambda: writer)
    sent = await run_lifespan(health.DrainingMiddleware(inner_app))
    assert sent[-1] == {"type": "lifespan.shutdown.complete"}
    assert writer.stopped_with == []
