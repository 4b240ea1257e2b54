"""The consumer's side of :mod:`voiceconv.control`: carrying a request out on the live call.

The consumer holding a call gets ``{"type": "voiceconv.control", ...}`` messages through its
channel-layer group and hands them to :func:`handle`, which carries the action out with the
consumer's own methods, records it on the call (a ``control`` transcript entry: who asked and
what), and acknowledges to the requester's reply channel. Nothing here runs per audio frame.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
from typing import Any

from channels.db import database_sync_to_async

from voiceconv import metrics, warm_transfer
from voiceconv.capabilities import capabilities
from voiceconv.control import validate
from voiceconv.events import TranscriptTurn
from voiceconv.live import process_name
from voiceconv.session import SendToTwilio
from voiceconv.tools.registry import registry

logger = logging.getLogger("voiceconv.control")

#: Longest a ``say`` waits for the agent to finish what it is saying (seconds).
SAY_WAIT_SECONDS = 30.0
_FINAL_STATUSES = frozenset({"completed", "failed", "busy", "no-answer", "canceled"})


class Refused(Exception):
    """The live call cannot take this request (the reason is told to the requester)."""


async def handle(consumer: Any, message: dict[str, Any]) -> None:
    """Carry out one control message on ``consumer``'s call and acknowledge it."""
    action = str(message.get("action") or "")
    by = str(message.get("by") or "code")[:150]
    if action == "status":
        await _twilio_status(consumer, str((message.get("args") or {}).get("status") or ""))
        return
    ok, detail = True, ""
    try:
        if consumer.info is None or not consumer.session.state.started:
            raise Refused("the call has not started")
        if consumer._end_reason is not None or consumer.session.state.ended:
            raise Refused("the call is ending")
        args = validate(action, dict(message.get("args") or {}))
        detail = await _perform(consumer, action, args)
        _record(consumer, f"{action} by {by}: {_describe(action, args)}"
                + (f" ({detail})" if detail else ""))
    except (Refused, ValueError) as exc:
        ok, detail = False, str(exc)
        consumer.log.warning("control %s by %s refused: %s", action, by, detail)
    except Exception as exc:
        ok, detail = False, f"{type(exc).__name__}: {exc}"[:300]
        consumer.log.exception("control %s by %s failed", action, by)
    else:
        consumer.log.info("control %s by %s", action, by)
    metrics.control_request(action, ok)
    reply_to = message.get("reply_to")
    if reply_to and consumer.channel_layer is not None:
        try:
            await consumer.channel_layer.send(
                str(reply_to),
                {"type": "voiceconv.control.ack", "id": message.get("id"), "ok": ok,
                 "detail": detail, "process": process_name()},
            )
        except Exception as exc:
            consumer.log.warning("control %s: acknowledgement not sent: %s", action, exc)


def _describe(action: str, args: dict[str, Any]) -> str:
    if action == "hang_up":
        return str(args["reason"]) + (" (immediately)" if args.get("immediately") else "")
    if action == "say":
        return repr(args["text"]) if "text" in args else f"instructions {args['instructions']!r}"
    if action == "whisper":
        return repr(args["instructions"])
    if action in ("transfer", "warm_transfer"):
        return str(args["target"])
    if action == "send_dtmf":
        return str(args["digits"])
    return json.dumps(args, sort_keys=True, default=str)[:500]


def _record(consumer: Any, text: str) -> None:
    recorder = consumer.recorder
    if recorder is not None:
        recorder.turn(TranscriptTurn(role="control", text=text,
                                     offset_ms=consumer.session.state.now_ms))


async def _perform(consumer: Any, action: str, args: dict[str, Any]) -> str:
    if action == "hang_up":
        if args["immediately"]:
            consumer.spawn(consumer.end(args["reason"]))
            return ""
        await consumer.request_hangup(args["reason"])
        return ""
    if action == "say":
        if "text" in args:
            instructions = ("Say exactly this to the caller, in your own voice, and nothing "
                            f"else: {args['text']}")
        else:
            instructions = args["instructions"]
        effort = args.get("reasoning_effort")
        if effort is not None:
            model = consumer.get_model()
            if not capabilities(model).reasoning:
                raise Refused(f"{model} is not a reasoning model: no reasoning_effort")
        return await _say(consumer, instructions, effort)
    if action == "whisper":
        current = str(consumer.session_config.get("instructions") or "")
        combined = (current + "\n\n" if current else "") + args["instructions"]
        await _update_session(consumer, {"instructions": combined})
        return ""
    if action == "update":
        await _update_session(consumer, args)
        return ""
    if action == "transfer":
        refusal = await consumer.request_transfer(args["target"])
        if refusal:
            raise Refused(refusal)
        return ""
    if action == "warm_transfer":
        brief = args["brief"] or "A caller is being transferred to you."
        refusal = await warm_transfer.start(consumer, args["target"], brief)
        if refusal:
            raise Refused(refusal)
        await _say(consumer, "Ask the caller in one short sentence to hold while you connect "
                             "them, then say nothing more until you are told how it went.")
        return "calling the person"
    if action == "send_dtmf":
        await send_dtmf(consumer, args["digits"])
        return ""
    raise Refused(f"unknown action {action!r}")


async def _say(consumer: Any, instructions: str, effort: str | None = None) -> str:
    session = consumer.session
    if session.state.realtime_ready and not session.busy():
        await consumer.run_actions(session.say(instructions, reasoning_effort=effort))
        return ""

    async def later() -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SAY_WAIT_SECONDS
        while loop.time() < deadline and not session.state.ended:
            if session.state.realtime_ready and not session.busy():
                await consumer.run_actions(session.say(instructions, reasoning_effort=effort))
                return
            await asyncio.sleep(0.05)
        consumer.log.warning("say dropped: the agent did not fall silent within %.0f s",
                             SAY_WAIT_SECONDS)

    consumer.spawn(later())
    return "queued until the agent has finished speaking"


async def _update_session(consumer: Any, changes: dict[str, Any]) -> None:
    """Apply ``changes`` to the call's session config and send them as ``session.update``."""
    partial: dict[str, Any] = {"type": "realtime"}
    config = consumer.session_config
    if "instructions" in changes:
        partial["instructions"] = config["instructions"] = changes["instructions"]
        consumer.session.instructions = changes["instructions"]
    if "turn_detection" in changes:
        td = changes["turn_detection"]
        config.setdefault("audio", {}).setdefault("input", {})["turn_detection"] = td
        partial["audio"] = {"input": {"turn_detection": td}}
    if "tools" in changes:
        bound = await database_sync_to_async(_bind_tools, thread_sensitive=False)(
            changes["tools"]
        )
        consumer.tools = bound
        partial["tools"] = config["tools"] = [t.definition() for t in bound.values()]
    backend = consumer.backend
    if backend is None:  # reconnecting: the new session gets the updated config
        return
    await backend.send(json.dumps({"type": "session.update", "session": partial}))


def _bind_tools(names: list[str]) -> dict[str, Any]:
    # Imported here, not at the top: the models need Django's app registry, and this module is
    # importable before it is ready.
    from voiceconv.models import ToolDefinition
    from voiceconv.tools.binding import bind_definition
    bound: dict[str, Any] = {}
    definitions = {d.name: d for d in ToolDefinition.objects.filter(name__in=names, enabled=True)}
    for name in names:
        spec = registry.get(name)
        definition = definitions.get(name)
        if spec is None or definition is None:
            raise Refused(f"tool {name!r} is not a registered, enabled tool definition")
        bound[name] = bind_definition(definition, spec)
    return bound


# --- DTMF, in-band ------------------------------------------------------------------------

_DTMF_FREQUENCIES = {
    "1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "A": (697, 1633),
    "4": (770, 1209), "5": (770, 1336), "6": (770, 1477), "B": (770, 1633),
    "7": (852, 1209), "8": (852, 1336), "9": (852, 1477), "C": (852, 1633),
    "*": (941, 1209), "0": (941, 1336), "#": (941, 1477), "D": (941, 1633),
}
TONE_MS = 120
GAP_MS = 80
PAUSE_MS = 500


def _ulaw(sample: float) -> int:
    """G.711 μ-law of one sample in -1..1."""
    value = max(-32768, min(32767, round(sample * 32767)))
    sign = 0x80 if value < 0 else 0
    magnitude = min(-value if sign else value, 32635) + 0x84
    exponent = max(0, (magnitude >> 7).bit_length() - 1)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def dtmf_audio(digits: str) -> bytes:
    """μ-law 8 kHz audio of ``digits`` (``w`` = a half-second pause)."""
    out = bytearray()
    for digit in digits:
        if digit == "w":
            out += b"\xff" * (PAUSE_MS * 8)
            continue
        low, high = _DTMF_FREQUENCIES[digit]
        out += bytes(
            _ulaw(0.35 * math.sin(2 * math.pi * low * i / 8000)
                  + 0.35 * math.sin(2 * math.pi * high * i / 8000))
            for i in range(TONE_MS * 8)
        )
        out += b"\xff" * (GAP_MS * 8)
    return bytes(out)


async def send_dtmf(consumer: Any, digits: str) -> None:
    """Queue ``digits`` as in-band tones behind the audio already sent to Twilio (Media
    Streams has no DTMF message; see the README's "DTMF out")."""
    sid = json.dumps(consumer.session.state.stream_sid)
    audio = dtmf_audio(digits)
    actions = []
    for i in range(0, len(audio), 1600):  # 200 ms per message
        payload = base64.b64encode(audio[i:i + 1600]).decode()
        actions.append(SendToTwilio(
            '{"event":"media","streamSid":' + sid + ',"media":{"payload":"' + payload + '"}}'
        ))
    await consumer.run_actions(actions)


async def _twilio_status(consumer: Any, status: str) -> None:
    """Twilio's status callback reached the call: a final status ends it now."""
    if status not in _FINAL_STATUSES or consumer.info is None:
        return
    if consumer._end_reason is not None:
        return
    consumer.log.info("Twilio reports the call %s; ending the stream", status)
    reason = "caller_hung_up" if status == "completed" else "error"
    consumer.spawn(consumer.end(reason, "" if status == "completed" else f"Twilio status {status}"))
