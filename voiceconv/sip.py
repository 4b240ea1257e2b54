"""OpenAI's SIP path, the pure parts: what the ``realtime.call.incoming`` webhook says about
the call, and what is sent back (the accept's session, a REFER target).

A SIP trunk (Twilio Elastic SIP Trunking, say) sends the call straight to OpenAI; OpenAI
signs a ``realtime.call.incoming`` webhook to the app (:mod:`voiceconv.sip_views`), which
accepts it with the same session config the media-stream path sends in ``session.update``,
and attaches a sideband socket (:mod:`voiceconv.sip_runner`). No audio passes through here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from voiceconv.phone import number_key

#: Keys of the accept request the SDK takes as arguments (``CallAcceptParams``); the rest of
#: the session goes in ``extra_body``.
ACCEPT_KEYS = frozenset({
    "audio", "include", "instructions", "max_output_tokens", "model", "output_modalities",
    "parallel_tool_calls", "prompt", "reasoning", "tool_choice", "tools", "tracing",
    "truncation",
})

_URI = re.compile(r"<\s*([^>]*)>")


def header(headers: Iterable[Any], name: str) -> str:
    """The first SIP header called ``name`` (case-insensitive), or ``""``."""
    wanted = name.lower()
    for h in headers:
        hname = h.get("name") if isinstance(h, Mapping) else getattr(h, "name", "")
        if str(hname).lower() == wanted:
            value = h.get("value") if isinstance(h, Mapping) else getattr(h, "value", "")
            return str(value or "")
    return ""


def uri_user(value: str) -> str:
    """The user part of a SIP ``From``/``To`` value: ``"Ann" <sip:+1415…@host>;tag=x`` →
    ``+1415…``; a ``tel:`` URI gives its number. ``""`` when there is none."""
    match = _URI.search(value)
    uri = (match.group(1) if match else value.split(";", 1)[0]).strip()
    for scheme in ("sips:", "sip:", "tel:"):
        if uri.lower().startswith(scheme):
            uri = uri[len(scheme):]
            break
    user = uri.split("@", 1)[0] if "@" in uri else uri
    return user.split(";", 1)[0].strip()


def number(value: str) -> str:
    """The phone number in a SIP ``From``/``To`` header: E.164 when it is one, else the user."""
    user = uri_user(value)
    return number_key(user) or user


@dataclass(frozen=True, slots=True)
class IncomingSipCall:
    """A verified ``realtime.call.incoming`` event, as the call needs it."""

    call_id: str
    webhook_id: str
    from_number: str
    to_number: str
    sip_call_id: str = ""
    media_security: str = ""
    #: ``X-…`` headers of the INVITE (Twilio's trunk adds ``X-Twilio-CallSid``), untrusted.
    extra_headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_event(cls, event: Any, webhook_id: str) -> IncomingSipCall:
        data = event.data
        headers = list(data.sip_headers or [])
        extra = {
            str(h.name): str(h.value)[:200]
            for h in headers
            if str(h.name).lower().startswith("x-")
        }
        return cls(
            call_id=str(data.call_id),
            webhook_id=webhook_id,
            from_number=number(header(headers, "From"))[:128],
            to_number=number(header(headers, "To"))[:128],
            sip_call_id=header(headers, "Call-ID")[:200],
            media_security=str(data.sip_media_security or ""),
            extra_headers=dict(list(extra.items())[:20]),
        )

    def custom_parameters(self) -> dict[str, str]:
        """What the call's tools and hooks see (as the media path's ``<Parameter>``s)."""
        params = {"from": self.from_number, "to": self.to_number, "direction": "inbound",
                  "transport": "sip"}
        if self.sip_call_id:
            params["sip_call_id"] = self.sip_call_id
        params.update({k.lower(): v for k, v in self.extra_headers.items()})
        return params


def sip_session(session: Mapping[str, Any]) -> dict[str, Any]:
    """The media path's session without what the SIP leg decides: the audio formats (the
    trunk and OpenAI negotiate the codec) are left out, everything else is kept."""
    out = dict(session)
    audio = out.get("audio")
    if isinstance(audio, Mapping):
        trimmed: dict[str, Any] = {}
        for side in ("input", "output"):
            part = audio.get(side)
            if isinstance(part, Mapping):
                trimmed[side] = {k: v for k, v in part.items() if k != "format"}
        out["audio"] = trimmed
    return out


def accept_arguments(session: Mapping[str, Any], model: str) -> dict[str, Any]:
    """Keyword arguments for ``client.realtime.calls.accept`` from the session config."""
    body = sip_session(session)
    body.setdefault("model", model)
    body["type"] = "realtime"
    kwargs = {k: v for k, v in body.items() if k in ACCEPT_KEYS or k == "type"}
    extra = {k: v for k, v in body.items() if k not in kwargs}
    if extra:
        kwargs["extra_body"] = extra
    return kwargs


def refer_uri(target: str) -> str:
    """The ``Refer-To`` URI for a transfer target: ``sip:``/``tel:`` as given, a number as
    ``tel:+…``."""
    target = target.strip()
    if target.lower().startswith(("sip:", "sips:", "tel:")):
        return target
    return "tel:" + target
