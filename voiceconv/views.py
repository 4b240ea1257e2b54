"""Twilio webhook views: the incoming call and its status callback.

Both follow the same steps, as django-anymail's webhook views do: **validate** (method, CSRF
exemption, ``X-Twilio-Signature``: 403 to anything unsigned), **parse** the form into what the
call needs, **record** it through the ``Call`` manager (:meth:`CallManager.record_webhook`,
:meth:`CallManager.record_status`), **signal** (:data:`voiceconv.signals.call_received`,
:data:`voiceconv.signals.call_status_changed`), **answer** (TwiML that opens the bidirectional
media stream with a short-lived token bound to the CallSid; 204 for a status).

The incoming call is answered from the request alone: Twilio waits for its TwiML before the
caller hears anything, and calls come in bursts, so its row is written off the response path
by the process-wide writer and ``call_received`` is sent once it is
(:mod:`voiceconv.webhook_records`); the stream's claim picks the agent. The status callback's
database work runs in a worker thread of its own (``thread_sensitive=False``): the event loop
never waits on it, nor does it queue behind the one shared thread.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from voiceconv import active_calls, health, preconnect, security, signals, twiml, webhook_records
from voiceconv.conf import voiceconv_settings
from voiceconv.control import notify_status
from voiceconv.webhook_records import WebhookRecord

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

View = Callable[..., Coroutine[Any, Any, HttpResponse]]


def twilio_signed(view: View) -> View:
    """Refuse requests without a valid Twilio signature (403 and a log line)."""

    @functools.wraps(view)
    async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
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
        return await view(request, *args, **kwargs)

    return wrapper


def xml_response(body: str) -> HttpResponse:
    return HttpResponse(body, content_type="text/xml; charset=utf-8")


def _in_thread(fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """``fn`` in a worker thread of its own (never the one shared thread), connections tidied."""
    return database_sync_to_async(fn, thread_sensitive=False)


# --- the incoming call -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IncomingCall:
    """The incoming-call webhook's form, parsed."""

    call_sid: str
    account_sid: str
    from_number: str
    to_number: str
    direction: str
    status: str
    parameters: dict[str, str]

    @classmethod
    def parse(cls, form: Any) -> IncomingCall | None:
        call_sid = form.get("CallSid", "").strip()
        if not call_sid:
            return None
        parameters = {name: form.get(field, "") for field, name in FORWARDED_FIELDS.items()}
        return cls(
            call_sid=call_sid,
            account_sid=form.get("AccountSid", ""),
            from_number=form.get("From", ""),
            to_number=form.get("To", ""),
            direction=form.get("Direction", ""),
            status=form.get("CallStatus", "") or "ringing",
            parameters={k: v for k, v in parameters.items() if v},
        )


@csrf_exempt
@require_POST
@twilio_signed
async def incoming_call(request: HttpRequest) -> HttpResponse:
    """Answer an incoming (or outbound-API) call with ``<Connect><Stream>``."""
    incoming = IncomingCall.parse(request.POST)
    if incoming is None:
        logger.warning("incoming-call webhook without CallSid refused")
        return HttpResponse("CallSid missing", status=400)
    call_sid = incoming.call_sid
    if health.draining():
        logger.warning("call %s refused: this process is draining (shutting down)", call_sid)
        return xml_response(twiml.say_and_hang_up(voiceconv_settings.BUSY_MESSAGE))
    limit = voiceconv_settings.MAX_CONCURRENT_CALLS
    if limit and active_calls.count() >= limit:
        logger.warning("call %s refused: %d calls in progress (limit %d)", call_sid,
                       active_calls.count(), limit)
        return xml_response(twiml.say_and_hang_up(voiceconv_settings.BUSY_MESSAGE))

    # Agents with pre-connect: their OpenAI session opens while the phone rings (no waiting).
    preconnect.start(call_sid, incoming.direction, incoming.from_number, incoming.to_number)
    # Answered from the request alone: the row is written off the response path (the
    # process-wide writer), and call_received is sent once it is (voiceconv.webhook_records).
    webhook_records.record(WebhookRecord(
        call_sid=call_sid, account_sid=incoming.account_sid,
        from_number=incoming.from_number, to_number=incoming.to_number,
        direction=incoming.direction, status=incoming.status, received_at=timezone.now(),
    ))
    parameters = dict(incoming.parameters)
    parameters["call_token"] = security.make_stream_token(call_sid)

    origin = security.public_origin(request)
    stream_url = security.websocket_origin(origin).replace("ws://", "wss://", 1)
    stream_url += voiceconv_settings.STREAM_PATH
    logger.info("call %s from %s to %s: connecting stream", call_sid, incoming.from_number,
                incoming.to_number)
    return xml_response(twiml.connect_stream(stream_url, parameters))


# --- the status callback -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusCallback:
    """Twilio's status callback form, parsed (unknown status or bad duration: left out)."""

    call_sid: str
    status: str
    duration: float | None
    account_sid: str
    from_number: str
    to_number: str
    direction: str

    @classmethod
    def parse(cls, form: Any) -> StatusCallback | None:
        # Imported here, not at the top: the models need Django's app registry, and this module is
        # importable before it is ready.
        from voiceconv.models import Call

        call_sid = form.get("CallSid", "").strip()
        if not call_sid:
            return None
        status = form.get("CallStatus", "").strip()
        if status and status not in Call.Status.values:
            logger.warning("call %s: status callback with unknown CallStatus %r", call_sid, status)
            status = ""
        duration: float | None = None
        raw = form.get("CallDuration", "").strip()
        if raw:
            try:
                duration = float(raw)
                if not duration >= 0:  # also refuses nan
                    raise ValueError(raw)
            except ValueError:
                logger.warning("call %s: status callback with bad CallDuration %r", call_sid, raw)
                duration = None
        return cls(
            call_sid=call_sid,
            status=status,
            duration=duration,
            account_sid=form.get("AccountSid", ""),
            from_number=form.get("From", ""),
            to_number=form.get("To", ""),
            direction=form.get("Direction", ""),
        )


@csrf_exempt
@require_POST
@twilio_signed
async def call_status(request: HttpRequest) -> HttpResponse:
    """Twilio's call status callback: record ``CallStatus`` and ``CallDuration`` (204).

    400 without CallSid; 503 while the database is unavailable (Twilio retries on 5xx when
    configured to).
    """
    # Imported here, not at the top: the models need Django's app registry, and this module is
    # importable before it is ready.
    from voiceconv.models import Call

    update = StatusCallback.parse(request.POST)
    if update is None:
        logger.warning("status callback without CallSid ignored")
        return HttpResponse("CallSid missing", status=400)
    try:
        call, created = await _in_thread(Call.objects.record_status)(
            update.call_sid,
            status=update.status,
            duration=update.duration,
            account_sid=update.account_sid,
            from_number=update.from_number,
            to_number=update.to_number,
            direction=update.direction,
        )
    except DatabaseError:
        logger.exception("call %s: could not record status %r", update.call_sid, update.status)
        return HttpResponse("database unavailable", status=503)
    if created:
        logger.info("call %s: status callback for a call with no row; recorded it",
                    update.call_sid)
    logger.info("call %s: status %s, duration %s s", update.call_sid, update.status or "?",
                "?" if update.duration is None else update.duration)
    await _send(signals.call_status_changed, call=call, status=update.status,
                duration=update.duration, created=created)
    if update.status in Call.FINAL_STATUSES:
        # Ends a stream Twilio never stopped (sync: it waits on the channel layer).
        await sync_to_async(notify_status, thread_sensitive=False)(update.call_sid, update.status)
    return HttpResponse(status=204)


async def _send(signal: Any, **kwargs: Any) -> None:
    """Send ``signal`` (sender: the ``Call`` class); a failing receiver is logged, not raised."""
    # Imported here, not at the top: the models need Django's app registry, and this module is
    # importable before it is ready.
    from voiceconv.models import Call

    for receiver, response in await signal.asend_robust(sender=Call, **kwargs):
        if isinstance(response, Exception):
            logger.error("signal receiver %r raised %s: %s", receiver,
                         type(response).__name__, response)
