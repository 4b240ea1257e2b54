"""Health for load balancers, and draining on SIGTERM.

:func:`health_view` answers 200 while the process accepts calls and its database and channel
layer answer, else 503 with what is wrong (JSON either way).

Draining: wrap the project's ASGI application in :class:`DrainingMiddleware`. On SIGTERM the
process then stops taking calls (health answers 503 so the balancer moves on, the
incoming-call webhook answers the busy TwiML) while the calls in progress go on, for up to
``VOICECONV["DRAIN_SECONDS"]``; when the last one ends, or that time is up, the server's own
SIGTERM handling runs (daphne and uvicorn finalise what is left, reason ``shutdown``). A second
SIGTERM stops at once.

``DRAIN_SECONDS`` None (the default) waits as long as a call in progress may still last
(``MAX_CALL_SECONDS`` plus ``HANGUP_GRACE_SECONDS``), so every call ends by itself. 0 stops at
once, as without the middleware: daphne cancels the calls, uvicorn closes their sockets with
1012; either way they end with reason ``shutdown``, their records written.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import connection
from django.http import HttpRequest, JsonResponse

from voiceconv import active_calls, realtime
from voiceconv.conf import voiceconv_settings
from voiceconv.live import process_name
from voiceconv.writer import get_writer

logger = logging.getLogger("voiceconv.health")

#: Seconds each dependency may take to answer the health check.
CHECK_TIMEOUT = 2.0

_draining = threading.Event()
_installed_pid: int | None = None


def draining() -> bool:
    """This process has been asked to stop: it takes no new calls."""
    return _draining.is_set()


def start_draining() -> None:
    if not _draining.is_set():
        _draining.set()
        drain = voiceconv_settings.timeouts.drain
        then = ("end now (DRAIN_SECONDS is 0)" if drain <= 0 else
                "go on until they end" if drain == float("inf") else
                f"go on for up to {drain:g} s")
        logger.warning("draining: new calls are refused; %d call(s) in progress %s",
                       _live_here(), then)


def stop_draining() -> None:
    """Back to normal (tests)."""
    _draining.clear()


def _live_here() -> int:
    return active_calls.unfinished()


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


async def _check_channel_layer() -> str:
    layer = get_channel_layer()
    if layer is None:
        return "not configured"
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "voiceconv.health"})
    await layer.receive(channel)
    return "ok"


async def health_view(request: HttpRequest) -> JsonResponse:
    """200 ``{"status": "ok", ...}`` when this process can take calls, else 503."""
    checks: dict[str, str] = {}
    healthy = True
    try:
        await asyncio.wait_for(
            database_sync_to_async(_check_database, thread_sensitive=False)(), CHECK_TIMEOUT
        )
        checks["database"] = "ok"
    except Exception as exc:
        healthy = False
        checks["database"] = f"{type(exc).__name__}: {exc}"[:200]
    try:
        checks["channel_layer"] = await asyncio.wait_for(_check_channel_layer(), CHECK_TIMEOUT)
    except Exception as exc:
        healthy = False
        checks["channel_layer"] = f"{type(exc).__name__}: {exc}"[:200] or "timeout"
    if draining():
        healthy = False
    body = {
        "status": "ok" if healthy else ("draining" if draining() else "unavailable"),
        "draining": draining(),
        "calls": _live_here(),
        "process": process_name(),
        **checks,
    }
    if not healthy:
        logger.info("health: %s", body)
    return JsonResponse(body, status=200 if healthy else 503)


# --- draining -----------------------------------------------------------------------------


def _install(loop: asyncio.AbstractEventLoop) -> None:
    """Put our SIGTERM handler in front of the server's (once per process, main thread)."""
    global _installed_pid
    if _installed_pid == os.getpid() or threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)
    _installed_pid = os.getpid()

    def pass_on(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, previous)
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            os.kill(os.getpid(), signum)

    async def drain_then_stop(signum: int) -> None:
        deadline = time.monotonic() + voiceconv_settings.timeouts.drain
        while _live_here() and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
        left = _live_here()
        logger.warning("drained: stopping the server (%d call(s) still in progress)", left)
        pass_on(signum, None)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if draining() or voiceconv_settings.timeouts.drain <= 0 or not _live_here():
            start_draining()
            pass_on(signum, frame)
            return
        start_draining()
        loop.call_soon_threadsafe(lambda: loop.create_task(drain_then_stop(signum)))

    signal.signal(signal.SIGTERM, on_sigterm)


#: Longest wait at shutdown for the records still queued to be written (seconds).
SHUTDOWN_WRITE_TIMEOUT = 30.0


async def write_pending_records(timeout: float = SHUTDOWN_WRITE_TIMEOUT) -> int:
    """Write every call's records still queued, trying for ``timeout`` seconds; returns how
    many could not be written (each logged at ERROR by the writer)."""
    writer = get_writer()
    if not writer.pending:
        return 0
    logger.warning("shutdown: writing the %d record(s) still queued", writer.pending)
    return await asyncio.to_thread(writer.stop, timeout)


class DrainingMiddleware:
    """ASGI middleware that makes SIGTERM drain the process (see the module docstring).

    ``application = DrainingMiddleware(ProtocolTypeRouter({...}))``. The handler is put in
    place at the first connection, after the server has installed its own.

    It also answers the ASGI ``lifespan`` protocol. At ``lifespan.startup`` it warms the
    process up (:func:`voiceconv.realtime.warm_up`: the SDK imported, the client and its TLS
    context built) so that the first call does not pay for it on the event loop. At
    ``lifespan.shutdown`` (after the server has closed every connection and finalised the
    calls) it writes the records still queued before answering. This matters under uvicorn,
    which ends the process by re-raising SIGTERM once it is done, so nothing registered with
    ``atexit`` runs; keep uvicorn's lifespan on.
    """

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app
        self._warm: asyncio.Future[bool] | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        if scope.get("type") == "lifespan":
            return await self._lifespan(receive, send)
        if _installed_pid != os.getpid():
            _install(asyncio.get_running_loop())
        if self._warm is None:
            # A server without lifespan (daphne): warm up beside the first connection.
            self._warm = asyncio.ensure_future(asyncio.to_thread(realtime.warm_up))
        return await self.app(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # Before the first call, not during it (realtime.warm_up).
                self._warm = asyncio.ensure_future(asyncio.to_thread(realtime.warm_up))
                await asyncio.wait({self._warm})
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await write_pending_records()
                finally:
                    await send({"type": "lifespan.shutdown.complete"})
                return
