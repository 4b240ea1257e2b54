"""Twilio webhooks of outbound calls: the answer URL and the answering-machine verdict.

Each checks ``X-Twilio-Signature`` first (as the incoming-call view does) and answers 403 to
anything unsigned.
"""

from __future__ import annotations

import logging

from channels.db import database_sync_to_async
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from voiceconv import security, twiml
from voiceconv.conf import voiceconv_settings
from voiceconv.models import Call
from voiceconv.telephony import adeliver_verdict
from voiceconv.views import twilio_signed, xml_response

logger = logging.getLogger("voiceconv.telephony")

#: ``AnsweredBy`` values Twilio's answering-machine detection posts.
ANSWERED_BY = frozenset({
    "human", "machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other",
    "fax", "unknown",
})


@csrf_exempt
@require_POST
@twilio_signed
async def outbound_answer(request: HttpRequest) -> HttpResponse:
    """The callee answered a call placed by :func:`voiceconv.calls.place_call`: connect the
    media stream, with the call's agent, custom parameters and a fresh stream token."""
    return await database_sync_to_async(_outbound_answer, thread_sensitive=False)(request)


def _outbound_answer(request: HttpRequest) -> HttpResponse:
    form = request.POST
    call_sid = form.get("CallSid", "")
    pk = request.GET.get("call", "")
    if not call_sid or not pk.isdigit():
        logger.warning("outbound answer without CallSid or call id refused")
        return HttpResponse("CallSid or call missing", status=400)
    try:
        call = Call.objects.filter(pk=int(pk)).first()
        if call is None:
            logger.warning("call %s: outbound answer for unknown call %s", call_sid, pk)
            return xml_response(twiml.say_and_hang_up(voiceconv_settings.BUSY_MESSAGE))
        if call.twilio_call_sid.startswith("pending-"):
            # Twilio can answer before place_call has stored the CallSid.
            Call.objects.filter(pk=call.pk, twilio_call_sid=call.twilio_call_sid).update(
                twilio_call_sid=call_sid
            )
        elif call.twilio_call_sid != call_sid:
            logger.warning("call %s: answer URL of call %s (%s) refused", call_sid, pk,
                           call.twilio_call_sid)
            return HttpResponse("call mismatch", status=400)
        Call.objects.filter(pk=call.pk).update(
            webhook_received_at=timezone.now(),
            twilio_account_sid=form.get("AccountSid", "") or call.twilio_account_sid,
            updated_at=timezone.now(),
        )
    except DatabaseError:
        logger.exception("call %s: could not record the answer", call_sid)
        return HttpResponse("database unavailable", status=503)

    parameters = {
        "call_sid": call_sid,
        "from": call.from_number,
        "to": call.to_number,
        "direction": call.direction,
    }
    parameters.update({str(k): str(v) for k, v in (call.custom_parameters or {}).items()})
    if call.agent_id is not None:
        parameters["agent"] = str(call.agent_id)
    parameters["call_token"] = security.make_stream_token(call_sid)
    origin = security.public_origin(request)
    stream_url = security.websocket_origin(origin).replace("ws://", "wss://", 1)
    stream_url += voiceconv_settings.STREAM_PATH
    logger.info("call %s: %s answered, connecting stream", call_sid, call.to_number)
    return xml_response(twiml.connect_stream(stream_url, parameters))


@csrf_exempt
@require_POST
@twilio_signed
async def amd_status(request: HttpRequest) -> HttpResponse:
    """Twilio's asynchronous answering-machine verdict: record it on the call and hand it to
    the live call, in whichever process holds it (channel-layer group of the call)."""
    form = request.POST
    call_sid = form.get("CallSid", "").strip()
    answered_by = form.get("AnsweredBy", "").strip()
    if not call_sid:
        logger.warning("AMD callback without CallSid ignored")
        return HttpResponse("CallSid missing", status=400)
    if answered_by not in ANSWERED_BY:
        logger.warning("call %s: AMD callback with unknown AnsweredBy %r", call_sid, answered_by)
        return HttpResponse("AnsweredBy unknown", status=400)
    duration = form.get("MachineDetectionDuration", "").strip()
    await database_sync_to_async(_record_verdict, thread_sensitive=False)(
        call_sid, answered_by, int(duration) if duration.isdigit() else None
    )
    logger.info("call %s: answered by %s (%s ms)", call_sid, answered_by, duration or "?")
    await adeliver_verdict(call_sid, answered_by)
    return HttpResponse(status=204)


def _record_verdict(call_sid: str, answered_by: str, duration_ms: int | None) -> None:
    try:
        Call.objects.filter(twilio_call_sid=call_sid).update(
            answered_by=answered_by, machine_detection_ms=duration_ms, updated_at=timezone.now()
        )
    except DatabaseError:
        logger.exception("call %s: could not record the AMD verdict %s", call_sid, answered_by)
