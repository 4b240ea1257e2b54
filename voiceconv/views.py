"""Twilio webhook views: the incoming call and its status callback.

Both check ``X-Twilio-Signature`` first (unless switched off) and answer 403 to anything
unsigned. The incoming-call view picks the agent, records the call and answers TwiML that
opens the bidirectional media stream, handing it a short-lived token bound to the CallSid.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from voiceconv import security, twiml
from voiceconv.conf import voiceconv_settings

logger = logging.getLogger("voiceconv.views")

#: Call facts forwarded to the stream as ``<Parameter>``s (webhook field → parameter name).
FORWARDED_FIELDS = {
    "CallSid": "call_sid",
    "From": "from",
    "To": "to",
    "Direction": "direction",
    "CallerName": "caller_name",
    "ForwardedFrom": "forwarded_from",
}


def twilio_signed(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Refuse requests without a valid Twilio signature (403 and a log line)."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if security.signature_checks_enabled() and not security.validate_request_signature(
            request
        ):
            if not security.auth_token():
                why = "TWILIO_AUTH_TOKEN is empty, so no signature can be checked (set it)"
            elif not request.headers.get("X-Twilio-Signature"):
                why = "no X-Twilio-Signature header"
            else:
                why = "X-Twilio-Signature does not match (check PUBLIC_URL and the URL in Twilio)"
            logger.warning(
                "refused %s %s: %s (CallSid=%s)",
                request.method,
                request.path,
                why,
                request.POST.get("CallSid", "?"),
            )
            return HttpResponseForbidden("invalid signature")
        return view(request, *args, **kwargs)

    return wrapper


def xml_response(body: str) -> HttpResponse:
    return HttpResponse(body, content_type="text/xml; charset=utf-8")


@csrf_exempt
@require_POST
@twilio_signed
def incoming_call(request: HttpRequest) -> HttpResponse:
    """Answer an incoming (or outbound-API) call with ``<Connect><Stream>``."""
    from voiceconv.consumers import MediaStreamConsumer

    form = request.POST
    call_sid = form.get("CallSid", "")
    if not call_sid:
        logger.warning("incoming-call webhook without CallSid refused")
        return HttpResponse("CallSid missing", status=400)
    from voiceconv.health import draining

    if draining():
        logger.warning("call %s refused: this process is draining (shutting down)", call_sid)
        return xml_response(twiml.say_and_hang_up(voiceconv_settings.BUSY_MESSAGE))
    limit = int(voiceconv_settings.MAX_CONCURRENT_CALLS or 0)
    if limit and MediaStreamConsumer.active_calls() >= limit:
        logger.warning("call %s refused: %d calls in progress (limit %d)", call_sid,
                       MediaStreamConsumer.active_calls(), limit)
        return xml_response(twiml.say_and_hang_up(voiceconv_settings.BUSY_MESSAGE))

    parameters = {name: form.get(field, "") for field, name in FORWARDED_FIELDS.items()}
    parameters = {k: v for k, v in parameters.items() if v}
    agent = None
    try:
        from voiceconv.models import Agent, Call

        agent = Agent.objects.for_number(form.get("To", ""))
        Call.objects.update_or_create(
            twilio_call_sid=call_sid,
            defaults={
                "twilio_account_sid": form.get("AccountSid", ""),
                "agent": agent,
                "direction": form.get("Direction", ""),
                "from_number": form.get("From", ""),
                "to_number": form.get("To", ""),
                "status": form.get("CallStatus", "ringing") or "ringing",
                "webhook_received_at": timezone.now(),
            },
        )
    except DatabaseError:
        # The call goes on with the default configuration; the stream re-creates the row.
        logger.exception("call %s: could not record the incoming call", call_sid)
    if agent is not None:
        parameters["agent"] = str(agent.pk)
    parameters["call_token"] = security.make_stream_token(call_sid)

    origin = security.public_origin(request)
    stream_url = security.websocket_origin(origin).replace("ws://", "wss://", 1)
    stream_url += str(voiceconv_settings.STREAM_PATH)
    logger.info("call %s from %s to %s: connecting stream", call_sid, form.get("From"),
                form.get("To"))
    return xml_response(twiml.connect_stream(stream_url, parameters))


@csrf_exempt
@require_POST
@twilio_signed
def call_status(request: HttpRequest) -> HttpResponse:
    """Twilio's call status callback: final status and duration."""
    from voiceconv.status import call_status_callback

    return call_status_callback(request)
