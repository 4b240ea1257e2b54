"""A GPT-Live stand-in on loopback, the sibling of :class:`~voiceconv.testing.RealtimeStandIn`.

It speaks the ``/v1/live/sessions`` dialect the installed ``openai`` SDK carries, checks every
event both ways against ``openai.types.live`` and plays a scripted model (answers, delegated
function calls, client delegations, timed transcript fragments, audio fixtures,
interruption, faults): see :mod:`~voiceconv.testing.live_server.session` and
:mod:`~voiceconv.testing.live_server.speech` for exactly what it models.

Also runnable as a process: ``python -m voiceconv.testing.live_server --port 8766`` prints the
base URL once listening and serves until SIGTERM.
"""

from voiceconv.testing.live_server.protocol import (
    validate_live_client_event,
    validate_live_server_event,
)
from voiceconv.testing.live_server.script import (
    ScriptedDelegation,
    ScriptedFragment,
    ScriptedLiveAnswer,
)
from voiceconv.testing.live_server.server import GPTLiveStandIn
from voiceconv.testing.live_server.session import LiveStandInSession

__all__ = [
    "GPTLiveStandIn",
    "LiveStandInSession",
    "ScriptedDelegation",
    "ScriptedFragment",
    "ScriptedLiveAnswer",
    "validate_live_client_event",
    "validate_live_server_event",
]
