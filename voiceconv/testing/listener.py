"""What both OpenAI stand-ins share: the loopback listener, its lifecycle and the handshake.

:class:`~voiceconv.testing.RealtimeStandIn` and :class:`~voiceconv.testing.GPTLiveStandIn` are
each a :class:`StandInListener`: one WebSocket server on loopback, one session object a socket
(``sessions``, ``wait_for_session``), the upgrade checked as the live service checks it (the
path, a bearer key, optionally a refusal status) with OpenAI's JSON error bodies. What differs
(the path, the query, what a session is) is in each subclass.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from http import HTTPStatus
from types import TracebackType
from typing import Any, ClassVar, Generic, Self, TypeVar
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

__all__ = ["StandInListener"]

logger = logging.getLogger("voiceconv.testing")

SessionT = TypeVar("SessionT")


class StandInListener(Generic[SessionT]):
    """A loopback WebSocket listener for one OpenAI dialect (subclass it).

    ``api_key`` accepts only that bearer key (any non-empty one when None);
    ``refuse_status`` refuses every upgrade with that HTTP status (mutable at run time);
    ``ssl_context`` serves ``wss://`` (``base_url`` is then ``https://``).
    """

    #: The socket's path (``/v1/realtime``, ``/v1/live/sessions``).
    path: ClassVar[str] = ""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        strict: bool = True,
        refuse_status: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key
        self.strict = strict
        self.refuse_status = refuse_status
        self.ssl_context = ssl_context
        self.sessions: list[SessionT] = []
        #: Every upgrade request: ``{"path": ..., "headers": {...}}``.
        self.handshakes: list[dict[str, Any]] = []
        self._server: Server | None = None
        self._new_session: asyncio.Event | None = None

    # ---- hooks -----------------------------------------------------------------------

    def load_types(self) -> None:
        """Import the SDK's event types (seconds, once a process): before the first client."""

    def listen_port(self) -> int:
        """The port the socket server binds (``port``; 0 for one behind a front)."""
        return self.port

    async def listening(self, ws_port: int) -> int:
        """The socket server listens on ``ws_port``; returns the public port."""
        return ws_port

    async def closing(self) -> None:
        """Before the socket server closes (stop what stands in front of it)."""

    async def _handler(self, ws: ServerConnection) -> None:
        raise NotImplementedError

    def check_query(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        """The dialect's own checks of a well-authenticated upgrade (None: accept)."""
        return None

    # ---- lifecycle -------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://host:port/v1``, for ``AsyncOpenAI(base_url=...)`` or ``OPENAI_BASE_URL``."""
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}/v1"

    @property
    def ws_url(self) -> str:
        """The socket base (``ws://host:port/v1``), for ``websocket_base_url``."""
        return self.base_url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)

    async def start(self) -> Self:
        """Start listening (binds the port; ``port=0`` picks a free one)."""
        if self.strict:
            self.load_types()
        self._new_session = asyncio.Event()
        self._server = await serve(
            self._handler,
            self.host,
            self.listen_port(),
            process_request=self._process_request,
            max_size=16 * 1024 * 1024,
            compression=None,
            ping_interval=None,
            ssl=self.ssl_context,
        )
        self.port = await self.listening(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self, close_timeout: float | None = None) -> None:
        """Close every connection (1001) and stop listening.

        ``close_timeout`` bounds the wait for each client's answer to the close frame
        (default: the websockets default, 10 s).
        """
        await self.closing()
        if self._server is not None:
            if close_timeout is not None:
                for connection in self._server.connections:
                    connection.close_timeout = close_timeout
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def session_connected(self, session: SessionT) -> None:
        """Add a new connection's session (wakes :meth:`wait_for_session`)."""
        self.sessions.append(session)
        if self._new_session is not None:
            self._new_session.set()

    async def wait_for_session(self, index: int = 0, timeout: float = 5.0) -> SessionT:
        """The ``index``-th session, waiting up to ``timeout`` seconds for it to connect."""
        assert self._new_session is not None, f"{type(self).__name__} is not started"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.sessions) <= index:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"session {index} did not connect within {timeout}s")
            self._new_session.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_session.wait(), remaining)
        return self.sessions[index]

    # ---- the handshake ---------------------------------------------------------------

    @staticmethod
    def _json_response(
        connection: ServerConnection,
        status: int,
        message: str,
        code: str | None,
        error_type: str = "invalid_request_error",
    ) -> Response:
        """An OpenAI JSON error body with ``status``."""
        body = json.dumps(
            {"error": {"message": message, "type": error_type, "param": None, "code": code}}
        )
        response = connection.respond(status, body)
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        return response

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        self.handshakes.append({"path": request.path, "headers": dict(request.headers.raw_items())})
        if url.path.rstrip("/") != self.path:
            logger.info("stand-in: refusing path %s", url.path)
            return self._json_response(
                connection, 404, f"Invalid URL (GET {url.path})", "unknown_url"
            )
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            return self._json_response(
                connection,
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                None,
            )
        if self.api_key is not None and auth[7:] != self.api_key:
            return self._json_response(
                connection, 401, "Incorrect API key provided.", "invalid_api_key"
            )
        if self.refuse_status is not None:
            status = HTTPStatus(self.refuse_status)
            return self._json_response(
                connection,
                status.value,
                f"Stand-in refused the connection: {status.phrase}",
                "rate_limit_exceeded" if status == 429 else None,
                "requests" if status == 429 else "invalid_request_error",
            )
        return self.check_query(connection, request)
