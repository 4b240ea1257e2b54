"""TwiML builders (pure), made with the ``twilio`` library's TwiML classes."""

from __future__ import annotations

from collections.abc import Mapping

from twilio.twiml.voice_response import Connect, VoiceResponse


def connect_stream(
    stream_url: str,
    parameters: Mapping[str, str],
    *,
    status_callback: str | None = None,
) -> str:
    """``<Connect><Stream>`` to the media stream websocket, call facts as ``<Parameter>``s.

    Each parameter's name and value together must stay under 500 characters (Twilio's limit);
    longer values are cut.
    """
    response = VoiceResponse()
    connect = Connect()
    kwargs: dict[str, str] = {"url": stream_url}
    if status_callback:
        kwargs["status_callback"] = status_callback
        kwargs["status_callback_method"] = "POST"
    stream = connect.stream(**kwargs)
    for name, value in parameters.items():
        value = str(value)[: max(0, 499 - len(name))]
        stream.parameter(name=name, value=value)
    response.append(connect)
    return str(response)


def say_and_hang_up(message: str) -> str:
    """Speak ``message`` and hang up (busy, errors)."""
    response = VoiceResponse()
    response.say(message)
    response.hangup()
    return str(response)


def dial(target: str) -> str:
    """Hand the caller to a number or SIP address."""
    response = VoiceResponse()
    d = response.dial()
    if target.startswith("sip:"):
        d.sip(target)
    else:
        d.number(target)
    return str(response)
