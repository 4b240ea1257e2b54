"""Warm transfer on the media-stream path: brief a human, then bridge the caller to them.

1. :func:`start` (the ``warm_transfer`` tool, through the call's control): the target must be
   on the agent's transfer allow-list. The caller stays on the stream, on hold: the agent
   tells them to hold and then answers nothing they say (automatic responses off).
2. The human's leg is placed through Twilio's REST API with TwiML that says the brief (what
   the model wrote from the conversation) and then joins a conference named after the call;
   its status callback (:func:`status_view`, signed) reaches the live call through the
   channel layer, whichever process holds it.
3. Answered (``in-progress``): the caller's call is updated to ``<Dial><Conference>`` the same
   room; Twilio ends the stream, and the caller hears the conference's hold music until the
   human, brief heard, enters and starts it. Recorded ``connected``; the call ends
   ``transferred``.
4. Not answered (``no-answer``, ``busy``, ``failed``, ``canceled``, or nothing within
   ``WARM_TRANSFER_RING_TIMEOUT`` seconds and a grace): the human's leg is hung up, the agent
   answers again and tells the caller; recorded ``not_answered`` (or ``failed``).
5. The caller hangs up while the human's phone rings: the human's leg is hung up; recorded
   ``failed``.

Each step is recorded on :class:`~voiceconv.models.WarmTransfer` and logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from twilio.twiml.voice_response import Dial, VoiceResponse

from voiceconv import active_calls
from voiceconv.conf import voiceconv_settings
from voiceconv.phone import transfer_target
from voiceconv.twilio_rest import _client, hangup_call
from voiceconv.views import twilio_signed

if TYPE_CHECKING:
    from voiceconv.consumers.base import ConsumerBase

__all__ = ["conference_twiml", "human_twiml", "start", "status_view"]

logger = logging.getLogger("voiceconv.telephony")

#: Seconds after the ring timeout before an unanswered leg is given up without a callback.
CALLBACK_GRACE = 10.0
_NOT_ANSWERED = {"no-answer": "not_answered", "busy": "not_answered",
                 "canceled": "not_answered", "failed": "failed"}


def human_twiml(brief: str, conference: str) -> str:
    """What the human hears on answering: the brief, then the conference (they start it)."""
    response = VoiceResponse()
    if brief:
        response.say(brief)
    dial = Dial()
    dial.conference(conference, start_conference_on_enter=True, end_conference_on_exit=True,
                    beep=False)
    response.append(dial)
    return str(response)


def conference_twiml(conference: str) -> str:
    """The caller's new TwiML: the conference, waiting (hold music) until the human enters."""
    response = VoiceResponse()
    dial = Dial()
    dial.conference(conference, start_conference_on_enter=False, end_conference_on_exit=True,
                    beep=False)
    response.append(dial)
    return str(response)


def _place_human_leg(target: str, from_: str, brief: str, conference: str,
                     status_url: str) -> str:
    with _client() as client:
        call = client.calls.create(
            to=target, from_=from_, twiml=human_twiml(brief, conference),
            timeout=int(voiceconv_settings.WARM_TRANSFER_RING_TIMEOUT),
            status_callback=status_url, status_callback_method="POST",
            status_callback_event=["answered", "completed"],
        )
    return str(call.sid)


def _move_caller(call_sid: str, conference: str) -> None:
    with _client() as client:
        client.calls(call_sid).update(twiml=conference_twiml(conference))


def _update(pk: int, **fields: Any) -> None:
    # Imported here, not at the top: the models need Django's app registry, and this module is
    # importable before it is ready.
    from voiceconv.models import WarmTransfer

    try:
        WarmTransfer.objects.filter(pk=pk).update(**fields)
    except DatabaseError:
        logger.exception("warm transfer %s: could not record %s", pk, fields)


async def start(consumer: ConsumerBase, target: str, brief: str) -> str | None:
    """Begin a warm transfer of ``consumer``'s call; the refusal, or None once dialling."""
    # Imported here, not at the top: the models need Django's app registry, and this module is
    # importable before it is ready.
    from voiceconv.models import WarmTransfer

    info = consumer.info
    refusal = consumer.transfer_refusal(target)
    if refusal is not None or info is None:
        return refusal or "the call has not started"
    if getattr(consumer, "warm_transfer", None) is not None:
        return "A transfer is already in progress."
    if info.call_pk is None:
        return "This call is not on record; it cannot be transferred warm."
    destination = transfer_target(target)
    conference = f"voiceconv-{info.call_sid}"
    row = await WarmTransfer.objects.acreate(
        call_id=info.call_pk, target=destination, brief=brief[:2000], conference=conference
    )
    consumer.warm_transfer = row
    _hold(consumer, True)
    status_url = (consumer.public_origin() + reverse("voiceconv:warm-transfer-status")
                  + f"?transfer={row.pk}")
    telephony = consumer.telephony
    caller_id = ""
    if telephony is not None:
        caller_id = await database_sync_to_async(
            telephony.settings.outbound_caller_id, thread_sensitive=False)()
    from_ = caller_id or (
        info.from_number if info.direction.startswith("outbound") else info.to_number)
    consumer.log.info("warm transfer to %s: calling the human (conference %s)", destination,
                      conference)
    consumer.spawn(_dial(consumer, row.pk, destination, from_, brief, conference, status_url))
    return None


async def _dial(consumer: ConsumerBase, pk: int, target: str, from_: str, brief: str,
                conference: str, status_url: str) -> None:
    try:
        sid = await asyncio.to_thread(_place_human_leg, target, from_, brief, conference,
                                      status_url)
    except Exception as exc:
        detail = f"{type(exc).__name__}: {exc}"[:500]
        consumer.log.error("warm transfer to %s: the human's call failed: %s", target, detail)
        await _back_to_agent(consumer, pk, "failed", detail, target)
        return
    row = consumer.warm_transfer
    if row is not None and row.pk == pk:
        row.human_call_sid = sid
    await database_sync_to_async(_update, thread_sensitive=False)(pk, human_call_sid=sid)
    await asyncio.sleep(float(voiceconv_settings.WARM_TRANSFER_RING_TIMEOUT) + CALLBACK_GRACE)
    row = consumer.warm_transfer
    if row is not None and row.pk == pk and row.status == row.Status.DIALLING:
        consumer.log.warning("warm transfer to %s: no answer and no callback in time", target)
        await asyncio.to_thread(hangup_call, sid)
        await _back_to_agent(consumer, pk, "not_answered", "no callback in time", target)


def _hold(consumer: ConsumerBase, on: bool) -> None:
    """While the human's phone rings the agent answers nothing the caller says."""
    telephony = consumer.telephony
    if telephony is None:
        return
    detection = telephony._set_create_response(not on)
    backend = consumer.backend
    if detection is not None and backend is not None:
        consumer.spawn(backend.send(json.dumps({"type": "session.update", "session": {
            "type": "realtime", "audio": {"input": {"turn_detection": detection}}}})))


async def on_status(consumer: ConsumerBase, pk: int, status: str) -> None:
    """The human's leg changed status (its callback reached this process's call)."""
    row = consumer.warm_transfer
    info = consumer.info
    if row is None or row.pk != pk or info is None or row.status != row.Status.DIALLING:
        consumer.log.info("warm transfer %s: status %s ignored", pk, status)
        return
    if status == "in-progress":
        row.status = row.Status.CONNECTED
        now = timezone.now()
        await database_sync_to_async(_update, thread_sensitive=False)(
            pk, status=row.status, human_status=status, answered_at=now, finished_at=now)
        consumer.log.info("warm transfer to %s: answered; bridging the caller", row.target)
        try:
            await asyncio.to_thread(_move_caller, info.call_sid, row.conference)
        except Exception as exc:
            detail = f"{type(exc).__name__}: {exc}"[:500]
            consumer.log.error("warm transfer to %s: moving the caller failed: %s", row.target,
                               detail)
            await database_sync_to_async(_update, thread_sensitive=False)(
                pk, status="failed", detail=detail)
            await consumer.end("error", f"warm transfer failed: {detail}")
            return
        await consumer.end("transferred")
        return
    outcome = _NOT_ANSWERED.get(status)
    if outcome is None and status == "completed":
        outcome = "not_answered"  # ended before it was answered
    if outcome is None:
        return
    consumer.log.warning("warm transfer to %s: %s (%s)", row.target, outcome, status)
    await _back_to_agent(consumer, pk, outcome, f"human's call {status}", row.target, status)


async def _back_to_agent(consumer: ConsumerBase, pk: int, outcome: str, detail: str,
                         target: str, human_status: str = "") -> None:
    # Imported here, not at the top: voiceconv.live_control imports this module.
    from voiceconv.live_control import _say

    row = consumer.warm_transfer
    if row is not None and row.pk == pk:
        row.status = outcome
        consumer.warm_transfer = None
    fields: dict[str, Any] = {"status": outcome, "detail": detail[:500],
                              "finished_at": timezone.now()}
    if human_status:
        fields["human_status"] = human_status
    await database_sync_to_async(_update, thread_sensitive=False)(pk, **fields)
    _hold(consumer, False)
    if consumer._end_reason is None and not consumer.session.state.ended:
        await _say(consumer, (
            f"The person you tried to transfer the caller to ({target}) did not answer. "
            "Tell the caller so in one short sentence, and offer to help them yourself."))


async def abandon(consumer: ConsumerBase, reason: str) -> None:
    """The call ends while the person's phone still rings: hang up their leg, record it."""
    row = consumer.warm_transfer
    consumer.warm_transfer = None
    if row is None or row.status != row.Status.DIALLING:
        return
    consumer.log.info("warm transfer to %s abandoned: the call ended (%s)", row.target, reason)
    if row.human_call_sid:
        await asyncio.to_thread(hangup_call, row.human_call_sid)
    await database_sync_to_async(_update, thread_sensitive=False)(
        row.pk, status="failed", detail=f"the call ended ({reason}) while the person's "
        "phone rang", finished_at=timezone.now())


async def deliver_status(transfer_pk: int, status: str) -> bool:
    """Send the human leg's status to the live call's group."""
    # Imported here, not at the top: the models need Django's app registry, and this module is
    # importable before it is ready.
    from voiceconv.models import WarmTransfer

    row = await WarmTransfer.objects.select_related("call").filter(pk=transfer_pk).afirst()
    layer = get_channel_layer()
    if row is None or layer is None:
        return False
    await layer.group_send(active_calls.group_name(row.call.twilio_call_sid), {
        "type": "voiceconv.warm_transfer", "transfer": row.pk, "status": status})
    return True


@csrf_exempt
@require_POST
@twilio_signed
async def status_view(request: HttpRequest) -> HttpResponse:
    """Status callback of the human's leg (signed): recorded, then sent to the live call."""
    status = request.POST.get("CallStatus", "").strip()
    pk = request.GET.get("transfer", "")
    if not status or not pk.isdigit():
        logger.warning("warm transfer status callback without CallStatus or transfer refused")
        return HttpResponse("CallStatus or transfer missing", status=400)
    await database_sync_to_async(_update, thread_sensitive=False)(int(pk), human_status=status)
    logger.info("warm transfer %s: the human's call is %s", pk, status)
    if not await deliver_status(int(pk), status):
        logger.warning("warm transfer %s: status %s not delivered", pk, status)
    return HttpResponse(status=204)

