"""TwiML builders (pure), made with the ``twilio`` library's TwiML classes."""

from __future__ import annotations

from collections.abc import Mapping

from twilio.twiml.voice_response import Connect, Dial, VoiceResponse


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
    """``<Response><Dial>target</Dial></Response>``: hand the caller to ``target``.

    ``target`` is an E.164 number or a ``sip:``/``sips:`` URI (put in ``<Sip>``), as
    :func:`voiceconv.phone.transfer_target` returns them. No XML declaration: this TwiML is
    sent inline through the REST API's ``Twiml`` parameter.
    """
    response = VoiceResponse()
    if target.lower().startswith(("sip:", "sips:")):
        dialing = Dial()
        dialing.sip(target)
        response.append(dialing)
    else:
        response.dial(target)
    return str(response.to_xml(xml_declaration=False))
