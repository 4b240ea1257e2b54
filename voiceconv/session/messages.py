"""Pure Twilio Media Streams message validation and parsing, and the JSON the core builds.

Nothing here keeps state: each function takes a message (text or parsed JSON) and returns
what it means, or raises :class:`BadInput` naming the kind of problem (so the session can log
each kind once per call). The errors say whose fault a problem is: :class:`BadInput` is
Twilio's (:class:`~voiceconv.exceptions.TwilioProtocolError`), :class:`BadEvent` OpenAI's
(:class:`~voiceconv.exceptions.OpenAIProtocolError`), and a builder asked for a message the
protocol forbids raises :class:`~voiceconv.exceptions.LocalProtocolError` (our bug). The
checks follow ``docs/protocols.md`` §T2: a known ``event`` name, the call's ``streamSid``,
base64 media payloads and integer timestamps within range.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from typing import Any

from voiceconv.exceptions import LocalProtocolError, OpenAIProtocolError, TwilioProtocolError

#: Largest Twilio message accepted; a 20 ms media frame is about 400 bytes.
MAX_MESSAGE_BYTES = 64 * 1024
#: The messages Twilio Media Streams sends; anything else is bad input.
TWILIO_EVENTS = frozenset({"connected", "start", "media", "mark", "dtmf", "stop"})
#: Media timestamps are milliseconds since the stream started; anything outside is bad input.
MAX_TIMESTAMP = 2**31

_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


class BadInput(TwilioProtocolError, ValueError):
    """A Twilio message the core refuses: ``kind`` groups the problem for logging."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class BadEvent(OpenAIProtocolError, ValueError):
    """A Realtime server event the core cannot use; the message says what happens to it."""


def is_base64(payload: str) -> bool:
    """Base64 alphabet only (so a payload can never break out of the JSON it is put in)."""
    return _BASE64.fullmatch(payload) is not None


def b64_decoded_len(b64: str) -> int:
    """Length in bytes of the data a base64 string encodes, without decoding it."""
    n = len(b64)
    if n == 0:
        return 0
    pad = 2 if b64.endswith("==") else 1 if b64.endswith("=") else 0
    return max(0, (n * 3) // 4 - pad)


def dumps(obj: Any) -> str:
    """Compact JSON, as sent on both sockets."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def obj(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one (peers send what they send)."""
    return value if isinstance(value, dict) else {}


def sid_text(value: Any) -> str:
    """A sid-like field: a short string, or "" for anything else."""
    return value[:64] if isinstance(value, str) else ""


# ------------------------------------------------------------------------------ Twilio in


def parse_twilio(text: str) -> dict[str, Any]:
    """A Twilio text frame as a JSON object with a known ``event`` name, or :class:`BadInput`."""
    if len(text) > MAX_MESSAGE_BYTES:
        raise BadInput("oversized", f"{len(text)} bytes")
    try:
        msg: dict[str, Any] = json.loads(text)  # a dict once msg["event"] did not raise
        event = msg["event"]
    except (ValueError, KeyError, TypeError, IndexError, RecursionError):
        raise BadInput("not json", text[:80]) from None
    check_event(event)
    return msg


def check_event(event: Any) -> str:
    """``event`` if it names a Twilio message, else :class:`BadInput`."""
    if not isinstance(event, str) or event not in TWILIO_EVENTS:
        raise BadInput("unknown event", repr(event)[:80])
    return event


def check_stream_sid(msg: dict[str, Any], stream_sid: str, *, required: bool) -> None:
    """The message belongs to this stream (media must say so; the others may omit it)."""
    sid = msg.get("streamSid")
    if sid == stream_sid or (sid is None and not required):
        return
    raise BadInput("wrong streamSid", str(sid)[:80])


def media_fields(msg: dict[str, Any]) -> tuple[str, int]:
    """The base64 payload and call-time timestamp (ms) of a ``media`` message."""
    try:
        media = msg["media"]
        payload = media["payload"]
        timestamp = int(media["timestamp"])
    except (KeyError, TypeError, ValueError, OverflowError):
        raise BadInput("malformed media", dumps(msg)[:120] if _dumpable(msg) else "") from None
    if not 0 <= timestamp < MAX_TIMESTAMP:
        raise BadInput("malformed media", f"timestamp {timestamp} out of range")
    if type(payload) is not str or not is_base64(payload):
        raise BadInput("bad payload", "media.payload is not base64")
    return payload, timestamp


def _dumpable(msg: Any) -> bool:
    try:
        json.dumps(msg)
    except (TypeError, ValueError, RecursionError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class StreamStart:
    """What Twilio's ``start`` message says about the call (``docs/protocols.md`` §T2)."""

    stream_sid: str
    call_sid: str
    account_sid: str = ""
    custom_parameters: dict[str, str] = field(default_factory=dict)


def parse_start(msg: dict[str, Any]) -> StreamStart:
    """The ``start`` message's stream and call, or :class:`BadInput` when a sid is missing."""
    start = obj(msg.get("start"))
    params = obj(start.get("customParameters"))
    stream_sid = sid_text(msg.get("streamSid")) or sid_text(start.get("streamSid"))
    call_sid = sid_text(start.get("callSid"))
    if not call_sid or not stream_sid:
        raise BadInput("start without sids", "start without callSid/streamSid")
    return StreamStart(
        stream_sid=stream_sid,
        call_sid=call_sid,
        account_sid=sid_text(start.get("accountSid")),
        custom_parameters={str(k): str(v) for k, v in params.items()},
    )


# ------------------------------------------------------------------------------ Realtime in


def parse_realtime(data: str | bytes) -> dict[str, Any]:
    """A Realtime server event as a JSON object with a ``type``, or :class:`BadEvent`."""
    try:
        event: dict[str, Any] = json.loads(data)  # a dict once event["type"] did not raise
        event["type"]
    except (ValueError, KeyError, TypeError, IndexError, RecursionError):
        text = data if isinstance(data, str) else data.decode("utf-8", "replace")
        raise BadEvent(f"malformed Realtime event ignored: {text[:120]!r}") from None
    return event


def audio_delta_fields(event: dict[str, Any]) -> tuple[str, str, str]:
    """``(delta, item_id, response_id)`` of an audio delta, or :class:`BadEvent`."""
    try:
        delta = event["delta"]
        item_id = event["item_id"]
        response_id = event["response_id"]
    except (KeyError, TypeError):
        raise BadEvent("malformed Realtime audio delta ignored") from None
    if type(delta) is not str or not is_base64(delta):
        raise BadEvent("Realtime audio delta that is not base64 dropped")
    return delta, str(item_id), str(response_id)


# ------------------------------------------------------------------------------ built here


def _stream(stream_sid: str) -> str:
    """``stream_sid`` as JSON; every message to Twilio needs the one from ``start``."""
    if not stream_sid:
        raise LocalProtocolError("a message to Twilio needs the streamSid of its start")
    return json.dumps(stream_sid)


def clear_message(stream_sid: str) -> str:
    """Twilio ``clear``: drop the audio queued for the caller (``docs/protocols.md`` §T3)."""
    return '{"event":"clear","streamSid":' + _stream(stream_sid) + "}"


def media_prefix(stream_sid: str) -> str:
    """Twilio ``media`` up to the payload (the fast path appends payload and ``"}}``)."""
    return '{"event":"media","streamSid":' + _stream(stream_sid) + ',"media":{"payload":"'


def mark_prefix(stream_sid: str) -> str:
    """Twilio ``mark`` up to the name (the fast path appends the name and ``"}}``)."""
    return '{"event":"mark","streamSid":' + _stream(stream_sid) + ',"mark":{"name":"'


def append_event(payload: str) -> str:
    """Realtime ``input_audio_buffer.append`` around an untouched base64 payload."""
    return '{"type":"input_audio_buffer.append","audio":"' + payload + '"}'


APPEND_PREFIX = '{"type":"input_audio_buffer.append","audio":"'


def truncate_event(item_id: str, audio_end_ms: int) -> str:
    """Realtime ``conversation.item.truncate`` of an assistant item at what was heard.

    ``audio_end_ms`` never exceeds the audio sent (``docs/protocols.md`` §R5), and is never
    negative (:class:`~voiceconv.exceptions.LocalProtocolError`).
    """
    if audio_end_ms < 0:
        raise LocalProtocolError(f"truncate of {item_id} at {audio_end_ms} ms")
    return dumps(
        {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": audio_end_ms,
        }
    )


def user_text_item(text: str, role: str = "user") -> dict[str, Any]:
    """A ``conversation.item.create`` event carrying text from the caller's side."""
    return {
        "type": "conversation.item.create",
        "item": {
            "type": "message",
            "role": role,
            "content": [{"type": "input_text", "text": text}],
        },
    }


def assistant_text_item(text: str) -> dict[str, Any]:
    """A ``conversation.item.create`` event replaying something the assistant said."""
    return {
        "type": "conversation.item.create",
        "item": {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text}],
        },
    }


def tool_output_item(call_id: str, output: str) -> str:
    """A ``conversation.item.create`` carrying a tool's output back to the model."""
    return dumps(
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": call_id, "output": output},
        }
    )


#: μ-law bytes per media message of the apology (1 s).
APOLOGY_CHUNK = 8000
#: The mark that follows the apology; its echo proves it was heard.
APOLOGY_MARK = "apology"


def apology_frames(stream_sid: str, audio: bytes) -> list[str]:
    """Twilio messages that play the apology: ``clear``, the μ-law media, then its mark."""
    prefix = media_prefix(stream_sid)
    frames = [clear_message(stream_sid)]
    for i in range(0, len(audio), APOLOGY_CHUNK):
        chunk = base64.b64encode(audio[i : i + APOLOGY_CHUNK]).decode("ascii")
        frames.append(prefix + chunk + '"}}')
    frames.append(mark_prefix(stream_sid) + APOLOGY_MARK + '"}}')
    return frames
