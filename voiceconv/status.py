"""Twilio's call status callback: the final status and duration of a call.

A plain view over the POSTed form; :mod:`voiceconv.views` wraps it with the method, CSRF and
signature checks and routes it.
"""

from __future__ import annotations

import logging

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

logger = logging.getLogger("voiceconv.status")


def call_status_callback(request: HttpRequest) -> HttpResponse:
    """Record ``CallStatus`` and ``CallDuration`` on the call's row (204; 400 without CallSid).

    Twilio's word is final: its status and duration replace ours. A callback for a call we
    never saw creates the row, so every billed call is on record.
    """
    from voiceconv.models import Call

    form = request.POST
    call_sid = form.get("CallSid", "").strip()
    if not call_sid:
        logger.warning("status callback without CallSid ignored")
        return HttpResponse("CallSid missing", status=400)

    updates: dict[str, object] = {}
    status = form.get("CallStatus", "").strip()
    if status in Call.Status.values:
        updates["status"] = status
    elif status:
        logger.warning("call %s: status callback with unknown CallStatus %r", call_sid, status)
    duration = form.get("CallDuration", "").strip()
    if duration:
        try:
            seconds = float(duration)
            if seconds < 0:
                raise ValueError(duration)
        except ValueError:
            logger.warning("call %s: status callback with bad CallDuration %r", call_sid, duration)
        else:
            updates["duration_seconds"] = seconds

    try:
        call, created = Call.objects.get_or_create(
            twilio_call_sid=call_sid,
            defaults={
                "twilio_account_sid": form.get("AccountSid", ""),
                "from_number": form.get("From", ""),
                "to_number": form.get("To", ""),
                "direction": form.get("Direction", ""),
            },
        )
        if created:
            logger.info("call %s: status callback for a call with no row; recorded it", call_sid)
        if updates.get("status") in Call.FINAL_STATUSES and call.ended_at is None:
            updates["ended_at"] = timezone.now()
        if updates:
            updates["updated_at"] = timezone.now()
            Call.objects.filter(pk=call.pk).update(**updates)
    except DatabaseError:
        logger.exception("call %s: could not record status %r", call_sid, status)
        # 503 makes Twilio retry the callback later (it retries on 5xx when configured).
        return HttpResponse("database unavailable", status=503)
    logger.info(
        "call %s: status %s, duration %s s", call_sid, status or "?", duration or "?"
    )
    if updates.get("status") in Call.FINAL_STATUSES:
        from voiceconv.control import notify_status

        notify_status(call_sid, str(updates["status"]))  # ends a stream Twilio never stopped
    return HttpResponse(status=204)
