"""The GPT-Live stand-in's server: ``/v1/live/sessions`` on loopback, one session a socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Iterable
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from voiceconv.testing.live_server.protocol import live_tables
from voiceconv.testing.live_server.script import ScriptedLiveAnswer
from voiceconv.testing.live_server.session import LiveStandInSession

__all__ = ["GPTLiveStandIn"]


class GPTLiveStandIn:
    """Loopback WebSocket server speaking the GPT-Live dialect (``openai.types.live``).

    Reach it with the real SDK: ``AsyncOpenAI(base_url=standin.base_url).live.connect()``.
    ``answers`` is a FIFO of :class:`ScriptedLiveAnswer` (``default_answer`` when empty), said
    for the greeting (a ``session.commentary.append`` without a delegation), after each caller
    turn and after a delegated function call was answered; ``caller_transcripts`` likewise for
    the caller's words. ``start_error`` answers ``session.start`` with that error code and
    closes (a fault). ``lead_ms`` is how far ahead of the timeline (input audio received)
    output audio streams, ``transcript_delay_ms`` how far into the caller's speech its first
    word arrives (see :mod:`~voiceconv.testing.live_server.session`). ``strict`` validates
    every event both ways against the SDK's types and answers a bad client event with
    ``error`` (``protocol_violations`` of each session).
    """

    session_class: type[LiveStandInSession] = LiveStandInSession

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        strict: bool = True,
        lead_ms: int = 1000,
        transcript_delay_ms: int = 200,
        chunk_ms: int = 100,
        vad_rms_threshold: float = 0.02,
        silence_ms: int = 400,
        answers: Iterable[ScriptedLiveAnswer] = (),
        default_answer: ScriptedLiveAnswer | None = None,
        caller_transcripts: Iterable[str] = (),
        default_caller_transcript: str = "hello",
        start_error: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key
        self.strict = strict
        self.lead_ms = lead_ms
        self.transcript_delay_ms = transcript_delay_ms
        self.chunk_ms = chunk_ms
        self.vad_rms_threshold = vad_rms_threshold
        self.silence_ms = silence_ms
        self.answers: deque[ScriptedLiveAnswer] = deque(answers)
        self.default_answer = default_answer or ScriptedLiveAnswer()
        self.caller_transcripts: deque[str] = deque(caller_transcripts)
        self.default_caller_transcript = default_caller_transcript
        self.start_error = start_error
        self.sessions: list[LiveStandInSession] = []
        self.handshakes: list[dict[str, object]] = []
        self._server: Server | None = None
        self._new_session: asyncio.Event | None = None

    def next_answer(self) -> ScriptedLiveAnswer:
        return self.answers.popleft() if self.answers else self.default_answer

    def next_caller_transcript(self) -> str:
        if self.caller_transcripts:
            return self.caller_transcripts.popleft()
        return self.default_caller_transcript

    @property
    def base_url(self) -> str:
        """``http://host:port/v1``, for ``OPENAI_BASE_URL`` or ``AsyncOpenAI(base_url=...)``."""
        if self._server is None:
            raise RuntimeError("GPTLiveStandIn is not started")
        return f"http://{self.host}:{self.port}/v1"

    async def start(self) -> GPTLiveStandIn:
        if self.strict:
            live_tables()  # import the SDK's types now, not while the first client waits
        self._new_session = asyncio.Event()
        self._server = await serve(
            self._handler, self.host, self.port, process_request=self._process_request,
            max_size=16 * 1024 * 1024, compression=None, ping_interval=None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> GPTLiveStandIn:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def wait_for_session(self, index: int = 0, timeout: float = 5.0) -> LiveStandInSession:
        assert self._new_session is not None, "GPTLiveStandIn is not started"
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

    @staticmethod
    def _refuse(
        connection: ServerConnection, status: int, message: str, code: str | None
    ) -> Response:
        body = json.dumps(
            {"error": {"message": message, "type": "invalid_request_error", "param": None,
                       "code": code}}
        )
        response = connection.respond(status, body)
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        return response

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        headers = dict(request.headers.raw_items())
        self.handshakes.append({"path": request.path, "headers": headers})
        if url.path.rstrip("/") != "/v1/live/sessions":
            return self._refuse(connection, 404, f"Invalid URL (GET {url.path})", "unknown_url")
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            return self._refuse(connection, 401, "You didn't provide an API key.", None)
        if self.api_key is not None and auth[7:] != self.api_key:
            return self._refuse(connection, 401, "Incorrect API key provided.", "invalid_api_key")
        if "model" in parse_qs(url.query):
            # The model goes in session.start, never in the URL.
            return self._refuse(connection, 400, "Unknown parameter: 'model'.", "unknown_parameter")
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        session = self.session_class(self, ws)
        self.sessions.append(session)
        if self._new_session is not None:
            self._new_session.set()
        await session.run()
