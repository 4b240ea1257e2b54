"""The stand-in's WebSocket server: the handshake the live service checks, one session a socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections import deque
from collections.abc import Iterable
from http import HTTPStatus
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from voiceconv.testing.realtime_server.calls import SipCall, SipFront, new_call
from voiceconv.testing.realtime_server.config import _merge_session
from voiceconv.testing.realtime_server.protocol import _tables
from voiceconv.testing.realtime_server.script import ScriptedResponse
from voiceconv.testing.realtime_server.session import StandInSession

__all__ = ["RealtimeStandIn"]

logger = logging.getLogger("voiceconv.testing.realtime_server")


class RealtimeStandIn:
    """Loopback WebSocket server speaking the OpenAI Realtime GA protocol.

    ``responses`` is a FIFO of ``ScriptedResponse`` (``default_response`` when empty);
    ``caller_transcripts`` likewise for input transcription (``default_caller_transcript``).
    ``refuse_status`` refuses every upgrade with that HTTP status (mutable at run time).
    ``speed_factor`` is how much faster than real time audio is streamed;
    ``vad_rms_threshold`` is the RMS (0..1) that counts as speech at VAD ``threshold`` 0.5
    (it scales with the session's threshold). ``reject_voice_resend`` also rejects an
    unchanged voice after the first audio.
    """

    #: The class of each connection's session (subclass it to record more).
    session_class: type[StandInSession] = StandInSession

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        refuse_status: int | None = None,
        speed_factor: float = 5.0,
        chunk_ms: tuple[int, int] = (20, 200),
        vad_rms_threshold: float = 0.02,
        session_lifetime_s: float | None = None,
        strict: bool = True,
        reject_voice_resend: bool = False,
        responses: Iterable[ScriptedResponse] = (),
        default_response: ScriptedResponse | None = None,
        caller_transcripts: Iterable[str] = (),
        default_caller_transcript: str = "hello",
        ssl_context: ssl.SSLContext | None = None,
        sip: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key
        self.refuse_status = refuse_status
        self.speed_factor = speed_factor
        self.chunk_ms = chunk_ms
        self.vad_rms_threshold = vad_rms_threshold
        self.session_lifetime_s = session_lifetime_s
        self.strict = strict
        self.reject_voice_resend = reject_voice_resend
        self.responses: deque[ScriptedResponse] = deque(responses)
        self.default_response = default_response or ScriptedResponse()
        self.caller_transcripts: deque[str] = deque(caller_transcripts)
        self.default_caller_transcript = default_caller_transcript
        self.sessions: list[StandInSession] = []
        #: Serve ``wss://`` with this context (``base_url`` is then ``https://``).
        self.ssl_context = ssl_context
        #: Start every new session stalled: it accepts the connection, then sends nothing.
        self.stall_new_sessions = False
        #: Responses that turn detection starts are active at once, but their
        #: ``response.created`` goes out this many ms later (collisions with the client's own
        #: ``response.create``: ``conversation_already_has_active_response``).
        self.auto_response_created_delay_ms = 0
        self.handshakes: list[dict[str, Any]] = []
        #: Serve OpenAI's SIP control surface too (:mod:`.calls`): the REST call verbs on the
        #: public port, in front of the socket server.
        self.sip = sip
        #: SIP calls by call id (:meth:`new_sip_call`).
        self.calls: dict[str, SipCall] = {}
        self._front: SipFront | None = None
        self._server: Server | None = None
        self._new_session: asyncio.Event | None = None

    # ---- scripts ---------------------------------------------------------------------

    def next_response(self) -> ScriptedResponse:
        """Pop the next scripted response, or the default."""
        return self.responses.popleft() if self.responses else self.default_response

    def next_caller_transcript(self) -> str:
        """Pop the next scripted caller transcript, or the default."""
        return (
            self.caller_transcripts.popleft()
            if self.caller_transcripts
            else (self.default_caller_transcript)
        )

    # ---- lifecycle -------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://host:port/v1``, for ``AsyncOpenAI(base_url=...)`` or ``OPENAI_BASE_URL``."""
        if self._server is None:
            raise RuntimeError("RealtimeStandIn is not started")
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}/v1"

    @property
    def ws_url(self) -> str:
        """The socket base (``ws://host:port/v1``), for ``websocket_base_url``."""
        return self.base_url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)

    async def start(self) -> RealtimeStandIn:
        """Start listening (binds the port; ``port=0`` picks a free one)."""
        if self.strict:
            # Import the SDK's event types now (seconds, once per process), not while the
            # first client waits for ``session.created``.
            _tables()
        self._new_session = asyncio.Event()
        self._server = await serve(
            self._handler,
            self.host,
            0 if self.sip else self.port,
            process_request=self._process_request,
            max_size=16 * 1024 * 1024,
            compression=None,
            ping_interval=None,
            ssl=self.ssl_context,
        )
        ws_port = self._server.sockets[0].getsockname()[1]
        if self.sip:
            self._front = SipFront(self.calls, self.host, self.port, ws_port)
            await self._front.start()
            self.port = self._front.port
        else:
            self.port = ws_port
        return self

    def new_sip_call(self, from_number: str, to_number: str, **kwargs: Any) -> SipCall:
        """A call arriving over the SIP trunk: send its webhook with
        :func:`~voiceconv.testing.realtime_server.calls.send_call_incoming`."""
        call = new_call(from_number, to_number, **kwargs)
        self.calls[call.call_id] = call
        return call

    async def stop(self, close_timeout: float | None = None) -> None:
        """Close every connection (1001) and stop listening.

        ``close_timeout`` bounds the wait for each client's answer to the close frame
        (default: the websockets default, 10 s).
        """
        if self._front is not None:
            await self._front.stop()
            self._front = None
        if self._server is not None:
            if close_timeout is not None:
                for connection in self._server.connections:
                    connection.close_timeout = close_timeout
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> RealtimeStandIn:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def wait_for_session(self, index: int = 0, timeout: float = 5.0) -> StandInSession:
        """The ``index``-th session, waiting up to ``timeout`` seconds for it to connect."""
        assert self._new_session is not None, "RealtimeStandIn is not started"
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

    # ---- handshake and connections ---------------------------------------------------

    @staticmethod
    def _json_response(
        connection: ServerConnection,
        status: int,
        message: str,
        code: str | None,
        error_type: str = "invalid_request_error",
    ) -> Response:
        body = json.dumps(
            {"error": {"message": message, "type": error_type, "param": None, "code": code}}
        )
        response = connection.respond(status, body)
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        return response

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        query = parse_qs(url.query)
        self.handshakes.append({"path": request.path, "headers": dict(request.headers.raw_items())})
        if url.path.rstrip("/") != "/v1/realtime":
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
        if "model" not in query and "call_id" not in query:
            return self._json_response(
                connection,
                400,
                "Missing required parameter: 'model'.",
                "missing_required_parameter",
            )
        if "call_id" in query:
            call = self.calls.get(query["call_id"][0])
            if call is None or call.status != "accepted":
                return self._json_response(
                    connection, 404,
                    f"Call '{query['call_id'][0]}' not found or not active.", "call_not_found"
                )
        if request.headers.get("OpenAI-Beta"):
            logger.info("stand-in: client sent OpenAI-Beta; the GA service closes such sockets")
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        query = parse_qs(urlsplit(ws.request.path).query)
        model = (query.get("model") or ["gpt-realtime-2.1"])[0]
        call = self.calls.get((query.get("call_id") or [""])[0])
        if call is not None and call.accept is not None:
            model = str(call.accept.get("model") or model)
        session = self.session_class(self, ws, model=model)
        if call is not None and call.accept is not None:
            # The sideband of an accepted SIP call: the accept configured its session.
            session.call_id = call.call_id
            accepted = {k: v for k, v in call.accept.items() if k != "model"}
            session.config = _merge_session(session.config, accepted)
            call.session = session
        if self.stall_new_sessions:
            session.stall()
        if ws.request.headers.get("OpenAI-Beta"):
            session.protocol_violations.append("client: sent the OpenAI-Beta header")
        self.sessions.append(session)
        if self._new_session is not None:
            self._new_session.set()
        if ws.request.headers.get("OpenAI-Beta"):
            await ws.close(4000, "beta_api_shape_disabled")
            session.closed.set()
            return
        await session.run()
