"""The GPT-Live stand-in's server: ``/v1/live/sessions`` on loopback, one session a socket."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from voiceconv.testing.listener import StandInListener
from voiceconv.testing.live_server.protocol import live_tables
from voiceconv.testing.live_server.script import ScriptedLiveAnswer
from voiceconv.testing.live_server.session import LiveStandInSession

__all__ = ["GPTLiveStandIn"]


class GPTLiveStandIn(StandInListener[LiveStandInSession]):
    """Loopback WebSocket server speaking the GPT-Live dialect (``openai.types.live``).

    Reach it with the real SDK: ``AsyncOpenAI(base_url=standin.base_url).live.connect()``.
    ``answers`` is a FIFO of :class:`ScriptedLiveAnswer` (``default_answer`` when empty), said
    for the greeting (a ``session.commentary.append`` without a delegation), after each caller
    turn and after a delegation was answered; ``caller_transcripts`` likewise for the caller's
    words. Faults: ``start_error`` answers ``session.start`` with that error code and closes;
    ``refuse_status`` refuses every upgrade with that HTTP status; an answer's own faults are
    :class:`ScriptedLiveAnswer`'s. ``lead_ms`` is how far ahead of the timeline (input audio
    received) output audio streams, ``transcript_delay_ms`` how far into the caller's speech
    its first word arrives (see :mod:`~voiceconv.testing.live_server.session`). ``strict``
    validates every event both ways against the SDK's types and answers a bad client event
    with ``error`` (``protocol_violations`` of each session).
    """

    path = "/v1/live/sessions"
    session_class: type[LiveStandInSession] = LiveStandInSession

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        strict: bool = True,
        refuse_status: int | None = None,
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
        super().__init__(host=host, port=port, api_key=api_key, strict=strict,
                         refuse_status=refuse_status)
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

    def next_answer(self) -> ScriptedLiveAnswer:
        """Pop the next scripted answer, or the default."""
        return self.answers.popleft() if self.answers else self.default_answer

    def next_caller_transcript(self) -> str:
        """Pop the next scripted caller transcript, or the default."""
        if self.caller_transcripts:
            return self.caller_transcripts.popleft()
        return self.default_caller_transcript

    def load_types(self) -> None:
        live_tables()

    def check_query(self, connection: ServerConnection, request: Request) -> Response | None:
        if "model" in parse_qs(urlsplit(request.path).query):
            # The model goes in session.start, never in the URL.
            return self._json_response(
                connection, 400, "Unknown parameter: 'model'.", "unknown_parameter")
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        session = self.session_class(self, ws)
        self.session_connected(session)
        await session.run()
