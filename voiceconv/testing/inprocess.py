"""Serve a project's ASGI application inside this process, on a loopback port.

:class:`InProcessServer` runs uvicorn in the running event loop. The application, its
consumers, the call core and the recorder all run in the caller's own process (its settings,
its database, its channel layer), yet clients reach it the way Twilio does: over real HTTP and
real WebSockets on 127.0.0.1::

    async with InProcessServer(application) as server:
        server.http_url   # "http://127.0.0.1:PORT"
        server.ws_url     # "ws://127.0.0.1:PORT"

``manage.py voiceconv_call`` calls through one when it is given no ``--server``.

Stopping it closes every connection (a call still open is finalised by its consumer, as when
the caller hangs up), waits up to ``shutdown_timeout`` for the application's tasks, then runs
the ASGI lifespan shutdown, where :class:`voiceconv.health.DrainingMiddleware` writes the
records still queued. The process's signals stay its owner's: the server installs no handler.
It needs uvicorn (``pip install "voiceconv[uvicorn]"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any

__all__ = ["InProcessServer", "InProcessServerError"]

logger = logging.getLogger("voiceconv.testing.inprocess")


class InProcessServerError(RuntimeError):
    """The in-process server could not start (the message says why)."""


class InProcessServer:
    """uvicorn serving ``application`` on 127.0.0.1 inside the running event loop."""

    def __init__(
        self,
        application: Any,
        *,
        port: int = 0,
        startup_timeout: float = 30.0,
        shutdown_timeout: float = 30.0,
        log_level: str = "warning",
    ) -> None:
        self.application = application
        self.port = port
        self.startup_timeout = startup_timeout
        self.shutdown_timeout = shutdown_timeout
        self.log_level = log_level
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> InProcessServer:
        """Listen, run the lifespan start-up, and return once connections are accepted."""
        try:
            # Imported here, not at the top: uvicorn is an optional dependency
            # (voiceconv[uvicorn]), needed only when a server starts.
            import uvicorn
            from uvicorn.config import WS_PROTOCOLS
        except ImportError:
            raise InProcessServerError(
                'serving in-process needs uvicorn: pip install "voiceconv[uvicorn]"'
            ) from None

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                # The process's signals are its owner's (the command hangs up on Ctrl-C).
                yield

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", self.port))
        except OSError as exc:
            sock.close()
            raise InProcessServerError(f"cannot listen on 127.0.0.1:{self.port}: {exc}") from None
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.application, host="127.0.0.1", port=self.port, lifespan="auto",
            log_config=None, log_level=self.log_level, access_log=False,
            ws="websockets-sansio" if "websockets-sansio" in WS_PROTOCOLS else "auto",
            timeout_graceful_shutdown=int(self.shutdown_timeout),
        )
        self._server = Server(config)
        self._task = asyncio.create_task(self._serve(sock), name="voiceconv-inprocess-server")
        deadline = time.monotonic() + self.startup_timeout
        while not self._server.started:
            if self._task.done():
                self._server = None
                self._task.result()  # raises what stopped it
                raise InProcessServerError("the server stopped while starting")
            if time.monotonic() > deadline:
                task, self._server, self._task = self._task, None, None
                task.cancel()  # still in its lifespan start-up, say: nothing to finish
                await asyncio.gather(task, return_exceptions=True)
                raise InProcessServerError(
                    f"the server did not start within {self.startup_timeout} s"
                )
            await asyncio.sleep(0.02)
        return self

    async def _serve(self, sock: socket.socket) -> None:
        try:
            await self._server.serve(sockets=[sock])
        except SystemExit:
            # uvicorn exits the process when the application fails its lifespan start-up or
            # the socket cannot be served; it has logged why.
            raise InProcessServerError(
                "the server could not start (uvicorn logged why)"
            ) from None
        finally:
            sock.close()

    async def stop(self) -> None:
        """Close every connection, let the application finish its calls, run the lifespan
        shutdown. Idempotent."""
        server, task = self._server, self._task
        self._server = self._task = None
        if server is None or task is None:
            return
        server.should_exit = True
        try:
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                # Stop first (the application is finalising its calls), then pass it on.
                await task
                raise
        except InProcessServerError:
            pass
        except Exception:
            logger.exception("the in-process server failed while stopping")

    async def __aenter__(self) -> InProcessServer:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
