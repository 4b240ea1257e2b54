"""A GPT-Live stand-in on loopback, the sibling of :class:`~voiceconv.testing.RealtimeStandIn`.

It speaks the ``/v1/live/sessions`` dialect the installed ``openai`` SDK carries, checks every
event both ways against ``openai.types.live`` and plays a scripted model (answers, delegated
function calls, timed transcript fragments, interruption, faults): see
:mod:`~voiceconv.testing.live_server.session` for exactly what it models.
"""

from voiceconv.testing.live_server.protocol import (
    validate_live_client_event,
    validate_live_server_event,
)
from voiceconv.testing.live_server.script import ScriptedDelegation, ScriptedLiveAnswer
from voiceconv.testing.live_server.server import GPTLiveStandIn
from voiceconv.testing.live_server.session import LiveStandInSession

__all__ = [
    "GPTLiveStandIn",
    "LiveStandInSession",
    "ScriptedDelegation",
    "ScriptedLiveAnswer",
    "validate_live_client_event",
    "validate_live_server_event",
]
