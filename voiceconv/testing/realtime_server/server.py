"""The stand-in's WebSocket server: the handshake the live service checks, one session a socket."""

from __future__ import annotations

import logging
import ssl
from collections import deque
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from voiceconv.testing.listener import StandInListener
from voiceconv.testing.realtime_server.calls import SipCall, SipFront, new_call
from voiceconv.testing.realtime_server.config import _merge_session
from voiceconv.testing.realtime_server.protocol import _tables
from voiceconv.testing.realtime_server.script import ScriptedResponse
from voiceconv.testing.realtime_server.session import StandInSession

__all__ = ["RealtimeStandIn"]

logger = logging.getLogger("voiceconv.testing.realtime_server")


class RealtimeStandIn(StandInListener[StandInSession]):
    """Loopback WebSocket server speaking the OpenAI Realtime GA protocol.

    ``responses`` is a FIFO of ``ScriptedResponse`` (``default_response`` when empty);
    ``caller_transcripts`` likewise for input transcription (``default_caller_transcript``).
    ``refuse_status`` refuses every upgrade with that HTTP status (mutable at run time).
    ``speed_factor`` is how much faster than real time audio is streamed;
    ``vad_rms_threshold`` is the RMS (0..1) that counts as speech at VAD ``threshold`` 0.5
    (it scales with the session's threshold). ``reject_voice_resend`` also rejects an
    unchanged voice after the first audio.
    """

    path = "/v1/realtime"
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
        super().__init__(host=host, port=port, api_key=api_key, strict=strict,
                         refuse_status=refuse_status, ssl_context=ssl_context)
        self.speed_factor = speed_factor
        self.chunk_ms = chunk_ms
        self.vad_rms_threshold = vad_rms_threshold
        self.session_lifetime_s = session_lifetime_s
        self.reject_voice_resend = reject_voice_resend
        self.responses: deque[ScriptedResponse] = deque(responses)
        self.default_response = default_response or ScriptedResponse()
        self.caller_transcripts: deque[str] = deque(caller_transcripts)
        self.default_caller_transcript = default_caller_transcript
        #: Start every new session stalled: it accepts the connection, then sends nothing.
        self.stall_new_sessions = False
        #: Responses that turn detection starts are active at once, but their
        #: ``response.created`` goes out this many ms later (collisions with the client's own
        #: ``response.create``: ``conversation_already_has_active_response``).
        self.auto_response_created_delay_ms = 0
        #: Serve OpenAI's SIP control surface too (:mod:`.calls`): the REST call verbs on the
        #: public port, in front of the socket server.
        self.sip = sip
        #: SIP calls by call id (:meth:`new_sip_call`).
        self.calls: dict[str, SipCall] = {}
        self._front: SipFront | None = None

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

    def load_types(self) -> None:
        _tables()

    def listen_port(self) -> int:
        return 0 if self.sip else self.port

    async def listening(self, ws_port: int) -> int:
        if not self.sip:
            return ws_port
        self._front = SipFront(self.calls, self.host, self.port, ws_port)
        await self._front.start()
        return self._front.port

    async def closing(self) -> None:
        if self._front is not None:
            await self._front.stop()
            self._front = None

    def new_sip_call(self, from_number: str, to_number: str, **kwargs: Any) -> SipCall:
        """A call arriving over the SIP trunk: send its webhook with
        :func:`~voiceconv.testing.realtime_server.calls.send_call_incoming`."""
        call = new_call(from_number, to_number, **kwargs)
        self.calls[call.call_id] = call
        return call

    # ---- handshake and connections ---------------------------------------------------

    def check_query(self, connection: ServerConnection, request: Request) -> Response | None:
        query = parse_qs(urlsplit(request.path).query)
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
        self.session_connected(session)
        if ws.request.headers.get("OpenAI-Beta"):
            await ws.close(4000, "beta_api_shape_disabled")
            session.closed.set()
            return
        await session.run()
