"""Steer live calls from anywhere: a view, an admin action, a command, a task, another process.

Every function takes the call's CallSid, works from any process that shares the channel layer
(channels-redis) and the database, and comes in two forms, async (``ahang_up``) and sync
(``hang_up``)::

    from voiceconv import control

    control.say("CA…", "Your table is booked for eight.")       # the agent says it
    control.say("CA…", instructions="Offer the caller a callback.")
    control.whisper("CA…", "The caller is a premium customer; be extra helpful.")
    control.update("CA…", instructions="…", turn_detection={"type": "semantic_vad"})
    control.transfer("CA…", "+14155550100")
    control.warm_transfer("CA…", "+14155550100", "Ada, about a refund for order 17.")
    control.send_dtmf("CA…", "1234#")
    result = control.hang_up("CA…", reason="operator", by=request.user)
    if not result:
        print(result.detail)

The request goes to the call's channel-layer group; the process holding the call carries it
out, records it on the call (a ``control`` transcript entry: who asked, what) and
acknowledges. Each function returns a :class:`ControlResult`, true when the live call took the
request; false with the reason when it refused or no process answered within
``VOICECONV["CONTROL_TIMEOUT"]`` seconds. A CallSid with no call raises
:class:`CallNotFoundError`; a call that is not live (ended, not started, or its process gone)
raises :class:`CallNotLiveError`; bad arguments raise ``ValueError`` before anything is sent.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from voiceconv import active_calls
from voiceconv.capabilities import REASONING_EFFORTS
from voiceconv.conf import voiceconv_settings
from voiceconv.exceptions import VoiceconvError
from voiceconv.live import live_calls
from voiceconv.phone import transfer_target

__all__ = [
    "CallNotFoundError",
    "CallNotLiveError",
    "ControlError",
    "ControlResult",
    "ahang_up",
    "asay",
    "asend_dtmf",
    "atransfer",
    "aupdate",
    "awarm_transfer",
    "awhisper",
    "hang_up",
    "say",
    "send_dtmf",
    "transfer",
    "update",
    "warm_transfer",
    "whisper",
]

logger = logging.getLogger("voiceconv.control")

#: What the admin and the monitor socket may ask for, and what each needs.
ACTIONS = ("hang_up", "say", "whisper", "update", "transfer", "warm_transfer", "send_dtmf")
#: Keys voiceconv.control.update accepts (the voice is fixed once the session started).
UPDATE_KEYS = frozenset({"instructions", "tools", "turn_detection"})
_DTMF = re.compile(r"^[0-9A-Da-d*#wW]{1,32}$")
_MAX_TEXT = 4000


class ControlError(VoiceconvError):
    """A control request could not be sent to a live call."""


class CallNotFoundError(ControlError, LookupError):
    """No call with this CallSid is on record."""


class CallNotLiveError(ControlError):
    """The call is on record but not live (ended, not yet streaming, or its process gone)."""


@dataclass(frozen=True)
class ControlResult:
    """What became of a control request. True when the live call took it."""

    call_sid: str
    action: str
    #: The process holding the call answered and carried the request out.
    accepted: bool
    #: What happened, in words ("queued until the agent has finished speaking", a refusal, …).
    detail: str = ""
    #: The process that answered (``host:pid``), "" when none did.
    process: str = ""

    def __bool__(self) -> bool:
        return self.accepted


def _by(value: Any) -> str:
    """Who asked, as recorded on the call: a user's username, a string, or "code"."""
    if value is None or value == "":
        return "code"
    username = getattr(value, "get_username", None)
    return str(username() if callable(username) else value)[:150]


def _text(value: Any, what: str) -> str:
    text = str(value or "").strip()
    if not text:
        raise ValueError(f"{what} must not be empty")
    if len(text) > _MAX_TEXT:
        raise ValueError(f"{what} is longer than {_MAX_TEXT} characters")
    return text


def validate(action: str, args: dict[str, Any]) -> dict[str, Any]:
    """The request's arguments, checked and normalised; ``ValueError`` when they are wrong."""
    if action == "hang_up":
        return {"reason": str(args.get("reason") or "operator")[:32],
                "immediately": bool(args.get("immediately", False))}
    if action == "say":
        text, instructions = args.get("text"), args.get("instructions")
        if bool(text) == bool(instructions):
            raise ValueError("say takes the text to say or instructions, one of them")
        said: dict[str, Any] = {"text": _text(text, "text")} if text else {
            "instructions": _text(instructions, "instructions")}
        effort = args.get("reasoning_effort")
        if effort is not None:
            if effort not in REASONING_EFFORTS:
                raise ValueError(
                    f"reasoning_effort is one of {', '.join(REASONING_EFFORTS)}, not {effort!r}"
                )
            said["reasoning_effort"] = effort
        return said
    if action == "whisper":
        return {"instructions": _text(args.get("instructions"), "instructions")}
    if action == "update":
        unknown = set(args) - UPDATE_KEYS
        if "voice" in unknown:
            raise ValueError("the voice is fixed once a Realtime session has started")
        if unknown:
            raise ValueError(f"update takes {sorted(UPDATE_KEYS)}, not {sorted(unknown)}")
        if not args:
            raise ValueError("update needs instructions, tools or turn_detection")
        out: dict[str, Any] = {}
        if "instructions" in args:
            out["instructions"] = _text(args["instructions"], "instructions")
        if "tools" in args:
            tools = args["tools"]
            if not isinstance(tools, (list, tuple)) or not all(isinstance(t, str) for t in tools):
                raise ValueError("tools must be a list of tool names")
            out["tools"] = list(tools)
        if "turn_detection" in args:
            td = args["turn_detection"]
            if td is not None and not (isinstance(td, dict) and td.get("type") in
                                       ("server_vad", "semantic_vad")):
                raise ValueError('turn_detection must be None or {"type": "server_vad" | '
                                 '"semantic_vad", ...}')
            out["turn_detection"] = td
        return out
    if action == "transfer":
        return {"target": transfer_target(str(args.get("target") or ""))}
    if action == "warm_transfer":
        brief = str(args.get("brief") or "").strip()
        if len(brief) > _MAX_TEXT:
            raise ValueError(f"brief is longer than {_MAX_TEXT} characters")
        return {"target": transfer_target(str(args.get("target") or "")), "brief": brief}
    if action == "send_dtmf":
        digits = str(args.get("digits") or "")
        if not _DTMF.match(digits):
            raise ValueError(f"{digits!r} is not a DTMF sequence (0-9, *, #, A-D, w for a pause)")
        return {"digits": digits.upper().replace("W", "w")}
    raise ValueError(f"unknown control action {action!r}; one of {', '.join(ACTIONS)}")


def _check_live_sync(call_sid: str) -> None:
    # Imported here, not at the top: the models need Django's app registry, and this module is
    # importable before it is ready.
    from voiceconv.models import Call

    call = Call.objects.filter(twilio_call_sid=call_sid).first()
    if call is None:
        raise CallNotFoundError(f"no call {call_sid!r} on record")
    if call.ended_at is not None:
        raise CallNotLiveError(
            f"call {call_sid} ended at {call.ended_at:%Y-%m-%d %H:%M:%S} "
            f"({call.end_reason or call.status})"
        )
    if not call.twilio_stream_sid and call.transport != Call.Transport.SIP:
        raise CallNotLiveError(f"call {call_sid} has no media stream (status {call.status})")
    if not live_calls().filter(pk=call.pk).exists():
        raise CallNotLiveError(
            f"call {call_sid}: its process ({call.live_process or 'unknown'}) stopped sending "
            "heartbeats"
        )


async def arequest(
    call_sid: str, action: str, args: dict[str, Any] | None = None, *, by: Any = None,
    timeout: float | None = None,
) -> ControlResult:
    """Send ``action`` to the live call and wait for its acknowledgement."""
    checked = validate(action, dict(args or {}))
    await database_sync_to_async(_check_live_sync, thread_sensitive=False)(call_sid)
    layer = get_channel_layer()
    if layer is None:
        raise ControlError("no channel layer is configured (settings.CHANNEL_LAYERS)")
    wait = voiceconv_settings.timeouts.control if timeout is None else float(timeout)
    reply_to = await layer.new_channel()
    request_id = uuid.uuid4().hex
    await layer.group_send(
        active_calls.group_name(call_sid),
        {
            "type": "voiceconv.control",
            "id": request_id,
            "action": action,
            "args": checked,
            "by": _by(by),
            "reply_to": reply_to,
        },
    )
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            logger.warning("call %s: %s not acknowledged within %.1f s", call_sid, action, wait)
            return ControlResult(call_sid, action, False,
                                 f"no process holding the call answered within {wait:g} s")
        try:
            reply = await asyncio.wait_for(layer.receive(reply_to), remaining)
        except TimeoutError:
            continue
        if reply.get("id") != request_id:
            continue
        return ControlResult(
            call_sid, action, bool(reply.get("ok")), str(reply.get("detail") or ""),
            str(reply.get("process") or ""),
        )


async def ahang_up(
    call_sid: str, *, reason: str = "operator", immediately: bool = False, by: Any = None
) -> ControlResult:
    """End the call: once what the agent is saying has been heard, or ``immediately``."""
    return await arequest(call_sid, "hang_up", {"reason": reason, "immediately": immediately},
                          by=by)


async def asay(
    call_sid: str, text: str | None = None, *, instructions: str | None = None, by: Any = None,
    reasoning_effort: str | None = None,
) -> ControlResult:
    """The agent says ``text`` (or responds to ``instructions``) at the next moment it may
    speak: at once when it is silent, else once its current answer is done.
    ``reasoning_effort`` overrides the session's for this response (reasoning models only)."""
    args: dict[str, Any] = {"text": text} if text else {"instructions": instructions}
    if reasoning_effort is not None:
        args["reasoning_effort"] = reasoning_effort
    return await arequest(call_sid, "say", args, by=by)


async def awhisper(call_sid: str, instructions: str, *, by: Any = None) -> ControlResult:
    """An instruction the model follows from now on; never spoken as such."""
    return await arequest(call_sid, "whisper", {"instructions": instructions}, by=by)


async def aupdate(call_sid: str, *, by: Any = None, **changes: Any) -> ControlResult:
    """Change the live session: ``instructions`` (replacing them), ``tools`` (names of
    registered tools with a definition) or ``turn_detection``. The voice cannot change."""
    return await arequest(call_sid, "update", changes, by=by)


async def atransfer(call_sid: str, target: str, *, by: Any = None) -> ControlResult:
    """Hand the caller to ``target`` (E.164 number or ``sip:`` address) through Twilio's REST
    API, once what the agent is saying has been heard."""
    return await arequest(call_sid, "transfer", {"target": target}, by=by)


async def awarm_transfer(call_sid: str, target: str, brief: str = "", *,
                         by: Any = None) -> ControlResult:
    """Start a warm transfer to ``target`` (on the agent's allow-list): the caller holds, the
    person hears ``brief`` and is then bridged with the caller, or the caller is returned to
    the agent when nobody answers. True once the person's phone is being called."""
    return await arequest(call_sid, "warm_transfer", {"target": target, "brief": brief}, by=by)


async def asend_dtmf(call_sid: str, digits: str, *, by: Any = None) -> ControlResult:
    """Play DTMF tones to the other party (to drive an IVR on an outbound call).

    Media Streams has no "send digits" message and a TwiML update would end the stream, so the
    tones are played in-band on the call's audio; most IVRs detect them, some carriers may not.
    """
    return await arequest(call_sid, "send_dtmf", {"digits": digits}, by=by)


def hang_up(call_sid: str, *, reason: str = "operator", immediately: bool = False,
            by: Any = None) -> ControlResult:
    """Sync :func:`ahang_up`."""
    return async_to_sync(ahang_up)(call_sid, reason=reason, immediately=immediately, by=by)


def say(call_sid: str, text: str | None = None, *, instructions: str | None = None,
        by: Any = None, reasoning_effort: str | None = None) -> ControlResult:
    """Sync :func:`asay`."""
    return async_to_sync(asay)(call_sid, text, instructions=instructions, by=by,
                               reasoning_effort=reasoning_effort)


def whisper(call_sid: str, instructions: str, *, by: Any = None) -> ControlResult:
    """Sync :func:`awhisper`."""
    return async_to_sync(awhisper)(call_sid, instructions, by=by)


def update(call_sid: str, *, by: Any = None, **changes: Any) -> ControlResult:
    """Sync :func:`aupdate`."""
    return async_to_sync(aupdate)(call_sid, by=by, **changes)


def transfer(call_sid: str, target: str, *, by: Any = None) -> ControlResult:
    """Sync :func:`atransfer`."""
    return async_to_sync(atransfer)(call_sid, target, by=by)


def warm_transfer(call_sid: str, target: str, brief: str = "", *,
                  by: Any = None) -> ControlResult:
    """Sync :func:`awarm_transfer`."""
    return async_to_sync(awarm_transfer)(call_sid, target, brief, by=by)


def send_dtmf(call_sid: str, digits: str, *, by: Any = None) -> ControlResult:
    """Sync :func:`asend_dtmf`."""
    return async_to_sync(asend_dtmf)(call_sid, digits, by=by)


def notify_status(call_sid: str, status: str) -> None:
    """Hand Twilio's status callback to the live call (sync; from the status view).

    A final status ends the call's stream if Twilio's ``stop`` never arrived. Nothing waits
    for an answer: with no live call, nobody is listening and nothing happens.
    """
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(
            active_calls.group_name(call_sid),
            {"type": "voiceconv.control", "action": "status", "args": {"status": status},
             "by": "twilio"},
        )
    except Exception as exc:
        logger.warning("call %s: status %s not passed to the live call: %s: %s",
                       call_sid, status, type(exc).__name__, exc)
