"""A protocol-faithful local stand-in for the OpenAI Realtime API (GA, WebSocket).

The real ``openai`` SDK connects to it over loopback::

    async with RealtimeStandIn() as standin:
        client = AsyncOpenAI(base_url=standin.base_url, api_key="test")
        async with client.realtime.connect(model="gpt-realtime-2.1") as conn:
            ...
        session = await standin.wait_for_session()

It follows ``docs/protocols.md`` (§R and §S): ``session.created`` first, partial
``session.update`` merges with whole-update rejection, energy VAD on the input clock
(μ-law bytes / 8 = ms), scripted responses in the GA event order streamed faster than
real time, interruption, truncation limits and fault injection. With ``strict=True``
(the default) every event sent and received is checked against the SDK's own pydantic
types; problems land in ``StandInSession.protocol_violations``.

Also runnable as a process: ``python -m voiceconv.testing.realtime_server --port 8765``
prints the base URL once listening and serves until SIGTERM.
"""

from voiceconv.testing.realtime_server.calls import SipCall, send_call_incoming, sign_webhook
from voiceconv.testing.realtime_server.config import DEFAULT_INSTRUCTIONS, default_session_config
from voiceconv.testing.realtime_server.protocol import validate_client_event, validate_server_event
from voiceconv.testing.realtime_server.script import ScriptedFunctionCall, ScriptedResponse
from voiceconv.testing.realtime_server.server import RealtimeStandIn
from voiceconv.testing.realtime_server.session import SESSION_EXPIRED_MESSAGE, StandInSession

__all__ = [
    "DEFAULT_INSTRUCTIONS",
    "SESSION_EXPIRED_MESSAGE",
    "RealtimeStandIn",
    "ScriptedFunctionCall",
    "ScriptedResponse",
    "SipCall",
    "StandInSession",
    "default_session_config",
    "send_call_incoming",
    "sign_webhook",
    "validate_client_event",
    "validate_server_event",
]
