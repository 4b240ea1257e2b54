"""Call recording through Twilio's Recordings API (dual channel: caller and agent apart).

An agent with *record calls* on has each call recorded from the moment its stream starts
(:func:`start_recording`, run off the audio path). Twilio's recording status callback
(:func:`recording_status`) stores the recording on the call (:class:`~voiceconv.models.Recording`:
URL, duration, channels). Staff hear it on the call's admin page through :func:`recording_audio`,
which fetches the audio from Twilio with the account's credentials: the Twilio URL is never
handed to a browser.
"""

from __future__ import annotations

import logging

import requests
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.db import DatabaseError
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from voiceconv import security
from voiceconv.conf import voiceconv_settings
from voiceconv.models import Call, Recording
from voiceconv.twilio_rest import REQUEST_TIMEOUT, RebasingHttpClient, get_twilio_client
from voiceconv.views import twilio_signed

logger = logging.getLogger("voiceconv.recordings")

__all__ = ["fetch_recording_audio", "recording_audio", "recording_status", "start_recording"]


def start_recording(call_sid: str) -> str | None:
    """Ask Twilio to record the call (dual channel); the RecordingSid, or None (logged)."""
    origin = security.public_origin()
    client = None
    try:
        client = get_twilio_client()
        recording = client.calls(call_sid).recordings.create(
            recording_channels="dual",
            recording_status_callback=origin + reverse("voiceconv:recording-status"),
            recording_status_callback_event=["completed", "absent"],
            recording_status_callback_method="POST",
        )
    except Exception as exc:
        logger.error("call %s: recording could not be started: %s: %s", call_sid,
                     type(exc).__name__, exc)
        return None
    finally:
        session = getattr(getattr(client, "http_client", None), "session", None)
        if session is not None:
            session.close()
    logger.info("call %s: recording %s started", call_sid, recording.sid)
    return str(recording.sid)


def _int(value: str) -> int | None:
    value = (value or "").strip()
    return int(value) if value.isdigit() else None


def _store(form: dict[str, str]) -> bool:
    call = Call.objects.filter(twilio_call_sid=form.get("CallSid", "")).first()
    if call is None:
        logger.warning("recording %s for unknown call %s ignored", form.get("RecordingSid"),
                       form.get("CallSid"))
        return False
    Recording.objects.update_or_create(
        twilio_recording_sid=form["RecordingSid"],
        defaults={
            "call": call,
            "status": form.get("RecordingStatus", ""),
            "url": form.get("RecordingUrl", ""),
            "duration_seconds": _int(form.get("RecordingDuration", "")),
            "channels": _int(form.get("RecordingChannels", "")),
            "source": form.get("RecordingSource", ""),
            "error_code": form.get("ErrorCode", "") if form.get("ErrorCode") != "0" else "",
            "callback": form,
        },
    )
    return True


@csrf_exempt
@require_POST
@twilio_signed
async def recording_status(request: HttpRequest) -> HttpResponse:
    """Twilio's recording status callback: store the recording on its call (204)."""
    form = {key: request.POST.get(key, "") for key in request.POST}
    if not form.get("RecordingSid") or not form.get("CallSid"):
        logger.warning("recording callback without RecordingSid or CallSid ignored")
        return HttpResponse("RecordingSid or CallSid missing", status=400)
    try:
        await database_sync_to_async(_store, thread_sensitive=False)(form)
    except DatabaseError:
        logger.exception("recording %s could not be stored", form["RecordingSid"])
        return HttpResponse("database unavailable", status=503)
    logger.info("call %s: recording %s %s (%s s)", form["CallSid"], form["RecordingSid"],
                form.get("RecordingStatus", "?"), form.get("RecordingDuration", "?"))
    return HttpResponse(status=204)


def fetch_recording_audio(url: str) -> tuple[int, bytes, str]:
    """GET the recording's WAV from Twilio with the account's credentials:
    (status, body, content type). Honours ``VOICECONV["TWILIO_API_BASE"]``."""
    target = url + ".wav"
    base = voiceconv_settings.TWILIO_API_BASE
    if base:
        target = RebasingHttpClient(base).rebase(target)
    auth = (str(settings.TWILIO_ACCOUNT_SID), str(settings.TWILIO_AUTH_TOKEN))
    with requests.get(target, auth=auth, timeout=REQUEST_TIMEOUT) as response:
        kind = response.headers.get("Content-Type", "audio/x-wav")
        return int(response.status_code), bytes(response.content), kind


@staff_member_required
@require_GET
def recording_audio(request: HttpRequest, pk: int) -> HttpResponse:
    """The recording's audio for the admin's player (staff only), fetched from Twilio."""
    recording = Recording.objects.filter(pk=pk).first()
    if recording is None or not recording.url:
        raise Http404("no such recording")
    try:
        status, body, content_type = fetch_recording_audio(recording.url)
    except Exception as exc:
        logger.error("recording %s could not be fetched: %s: %s",
                     recording.twilio_recording_sid, type(exc).__name__, exc)
        return HttpResponse("recording unavailable", status=502)
    if status != 200:
        logger.error("recording %s: Twilio answered HTTP %s", recording.twilio_recording_sid,
                     status)
        return HttpResponse("recording unavailable", status=502)
    response = HttpResponse(body, content_type=content_type)
    response["Cache-Control"] = "private, no-store"
    return response
