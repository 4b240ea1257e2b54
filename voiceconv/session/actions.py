"""What the call core asks the I/O layer to do: small frozen dataclasses, named imperatively.

Each action carries a ``Literal`` ``type`` tag (as the Agents SDK's realtime inputs do); the
consumer dispatches on the class with ``match`` and ``assert_never``, so a new action that the
consumer does not run is a type error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from voiceconv.events import TranscriptTurn, Usage
from voiceconv.session.messages import StreamStart


@dataclass(frozen=True, slots=True)
class SendToTwilio:
    """Send this text to Twilio's socket."""

    text: str
    type: Literal["send_to_twilio"] = "send_to_twilio"


@dataclass(frozen=True, slots=True)
class SendToRealtime:
    """Send this text to the Realtime socket (dropped when no session is open)."""

    text: str
    type: Literal["send_to_realtime"] = "send_to_realtime"


@dataclass(frozen=True, slots=True)
class RecordTurn:
    turn: TranscriptTurn
    type: Literal["record_turn"] = "record_turn"


@dataclass(frozen=True, slots=True)
class RecordUsage:
    usage: Usage
    type: Literal["record_usage"] = "record_usage"


@dataclass(frozen=True, slots=True)
class RecordSessionSeconds:
    """Cumulative billable seconds of the speech session (GPT-Live bills by the second), and
    of them those billed at the paused rate (None: no split reported)."""

    seconds: float
    paused_seconds: float | None = None
    type: Literal["record_session_seconds"] = "record_session_seconds"


@dataclass(frozen=True, slots=True)
class RecordMilestone:
    """A moment of the call's start to time-stamp: ``session_ready`` (``session.updated``),
    ``first_audio_heard`` (Twilio's first mark echo)."""

    name: Literal["session_ready", "first_audio_heard"]
    type: Literal["record_milestone"] = "record_milestone"


@dataclass(frozen=True, slots=True)
class RecordFirstAudio:
    call_ms: int
    type: Literal["record_first_audio"] = "record_first_audio"


@dataclass(frozen=True, slots=True)
class RecordBargeIn:
    """The caller barged in: the Twilio ``clear`` (and any ``truncate``) before this action
    have been sent. The I/O layer times the reaction from the event that caused it."""

    type: Literal["record_barge_in"] = "record_barge_in"


@dataclass(frozen=True, slots=True)
class StampTime:
    """Read the monotonic clock now and hand it to :meth:`CallSession.stamp` with this action.

    The core reads no clock: it asks for the moments of a turn it times
    (:mod:`voiceconv.session.timing`). ``caller_stopped``: ``speech_stopped`` (or, on
    GPT-Live, a caller transcript fragment) was received; ``audio_received``: the first audio
    delta of assistant item ``item_id`` was received (``answer``: it answers the caller);
    ``audio_sent``: that delta has been sent to Twilio."""

    point: Literal["caller_stopped", "audio_received", "audio_sent"]
    item_id: str = ""
    answer: bool = False
    type: Literal["stamp_time"] = "stamp_time"


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One ``function_call`` item the model asked for."""

    call_id: str
    name: str
    arguments: str
    item_id: str | None = None


@dataclass(frozen=True, slots=True)
class RunTools:
    """Run these function calls; hand their outputs to :meth:`CallSession.tool_results`."""

    calls: tuple[ToolCall, ...]
    type: Literal["run_tools"] = "run_tools"


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """What one function call gave: ``output`` goes to the model, ``error`` to the record."""

    call_id: str
    name: str
    arguments: str
    output: str
    error: str = ""


@dataclass(frozen=True, slots=True)
class StartStream:
    """A valid ``start`` arrived: check and claim the call, then configure the session."""

    start: StreamStart
    type: Literal["start_stream"] = "start_stream"


@dataclass(frozen=True, slots=True)
class CloseStream:
    """Close Twilio's socket now (a stream that cannot be served), with this close code."""

    code: int | None = None
    type: Literal["close_stream"] = "close_stream"


@dataclass(frozen=True, slots=True)
class HangUp:
    reason: str
    type: Literal["hang_up"] = "hang_up"


@dataclass(frozen=True, slots=True)
class Transfer:
    target: str
    type: Literal["transfer"] = "transfer"


@dataclass(frozen=True, slots=True)
class ArmHangupDeadline:
    """A hang-up or transfer is pending: call :meth:`CallSession.hangup_overdue` if it has not
    happened within the grace period (``HANGUP_GRACE_SECONDS``)."""

    type: Literal["arm_hangup_deadline"] = "arm_hangup_deadline"


@dataclass(frozen=True, slots=True)
class EndCall:
    """The call is over; tear down and finalise (after the spoken apology with ``apologise``)."""

    reason: str
    error: str = ""
    apologise: bool = False
    type: Literal["end_call"] = "end_call"


@dataclass(frozen=True, slots=True)
class ApologyHeard:
    """Twilio echoed the apology's mark: the caller has heard it."""

    type: Literal["apology_heard"] = "apology_heard"


@dataclass(frozen=True, slots=True)
class FlushEarlyAudio:
    """The buffered caller audio before this action has been sent: call
    :meth:`CallSession.early_audio_sent` (and run what it returns).

    Until then, live caller frames are buffered behind it, and the next frame from Twilio takes
    them along in order: early and live audio never reach OpenAI out of order, however the
    sends of the two sockets' tasks interleave."""

    type: Literal["flush_early_audio"] = "flush_early_audio"


@dataclass(frozen=True, slots=True)
class Log:
    level: Literal["debug", "info", "warning", "error"]
    message: str
    type: Literal["log"] = "log"


Action = (
    SendToTwilio
    | SendToRealtime
    | RecordTurn
    | RecordUsage
    | RecordSessionSeconds
    | RecordFirstAudio
    | RecordMilestone
    | RecordBargeIn
    | StampTime
    | RunTools
    | StartStream
    | CloseStream
    | HangUp
    | ArmHangupDeadline
    | Transfer
    | EndCall
    | ApologyHeard
    | FlushEarlyAudio
    | Log
)
