"""OpenAI's ``realtime.call.incoming`` webhook: a SIP call for one of the agents.

The same steps as the Twilio webhooks (:mod:`voiceconv.views`): **validate** the signature
with the SDK (``client.webhooks.unwrap``, Standard Webhooks, the project's webhook secret);
400 and a log line for anything forged, stale or unsigned), **record** the call once per
OpenAI call id (a retried delivery is answered 200 and nothing else), **signal**
:data:`voiceconv.signals.call_received`, **answer**: accept the call with the agent's session
(built by the media path's own code) and start its sideband runner, or reject it with a SIP
status (no agent for the number, too many calls, the process draining).

Needs an ASGI server: the runner lives on the server's event loop after the response.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any

from channels.db import database_sync_to_async
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from voiceconv import active_calls, signals
from voiceconv.conf import voiceconv_settings
from voiceconv.health import draining
from voiceconv.models import Call
from voiceconv.realtime import default_openai_client, session_model
from voiceconv.sip import IncomingSipCall, accept_arguments
from voiceconv.sip_runner import SipCallRunner

logger = logging.getLogger("voiceconv.sip")

View = Callable[[HttpRequest], Coroutine[Any, Any, HttpResponse]]


def webhook_secret() -> str:
    """``VOICECONV["OPENAI_WEBHOOK_SECRET"]``, else the ``OPENAI_WEBHOOK_SECRET`` variable."""
    return str(voiceconv_settings.OPENAI_WEBHOOK_SECRET or "") or os.environ.get(
        "OPENAI_WEBHOOK_SECRET", "")


def _in_thread(fn: Callable[..., Any]) -> Callable[..., Any]:
    return database_sync_to_async(fn, thread_sensitive=False)


def _refused(call_pk: int, status: str, reason: str, error: str) -> None:
    now = timezone.now()
    Call.objects.filter(pk=call_pk).update(status=status, end_reason=reason, error=error,
                                           ended_at=now, updated_at=now)


def make_view(runner_class: type[SipCallRunner] = SipCallRunner) -> View:
    """The webhook view, running calls with ``runner_class`` (a :class:`SipCallRunner`)."""

    @csrf_exempt
    @require_POST
    async def incoming_sip_call(request: HttpRequest) -> HttpResponse:
        # Imported here: the SDK takes seconds to import, and the URLconf (which every
        # manage.py check loads) stays without it.
        from openai import InvalidWebhookSignatureError

        secret = webhook_secret()
        if not secret:
            logger.error("OpenAI webhook refused: no webhook secret (set VOICECONV "
                         "OPENAI_WEBHOOK_SECRET or the OPENAI_WEBHOOK_SECRET variable)")
            return HttpResponse("webhook secret not configured", status=400)
        client = default_openai_client()
        webhook_id = request.headers.get("webhook-id", "")
        try:
            event = client.webhooks.unwrap(request.body, dict(request.headers), secret=secret)
        except (InvalidWebhookSignatureError, ValueError) as exc:
            logger.warning("OpenAI webhook %s refused: %s", webhook_id or "without webhook-id",
                           exc)
            return HttpResponse("invalid signature", status=400)
        if getattr(event, "type", "") != "realtime.call.incoming":
            logger.debug("OpenAI webhook %s (%s) ignored", webhook_id, getattr(event, "type", ""))
            return HttpResponse(status=200)
        incoming = IncomingSipCall.from_event(event, webhook_id)
        call_id = incoming.call_id
        call, agent, created = await _in_thread(Call.objects.record_sip_call)(incoming)
        if not created:
            logger.info("SIP call %s: webhook %s is a retry of %s; already handled", call_id,
                        webhook_id, call.openai_webhook_id or "an earlier delivery")
            return HttpResponse(status=200)
        await signals.call_received.asend_robust(Call, call=call, agent=agent)

        limit = int(voiceconv_settings.MAX_CONCURRENT_CALLS or 0)
        refusal = None
        if draining():
            refusal = ("this process is draining (shutting down)",
                       int(voiceconv_settings.SIP_REJECT_BUSY_STATUS), Call.Status.BUSY)
        elif limit and active_calls.count() >= limit:
            refusal = (f"{active_calls.count()} calls in progress (limit {limit})",
                       int(voiceconv_settings.SIP_REJECT_BUSY_STATUS), Call.Status.BUSY)
        elif agent is None:
            refusal = (f"no enabled agent answers {incoming.to_number or 'the number called'} "
                       "and there is no default agent",
                       int(voiceconv_settings.SIP_REJECT_NO_AGENT_STATUS), Call.Status.FAILED)
        if refusal is not None:
            why, sip_status, status = refusal
            logger.warning("SIP call %s from %s refused (SIP %d): %s", call_id,
                           incoming.from_number, sip_status, why)
            try:
                await client.realtime.calls.reject(call_id, status_code=sip_status)
            except Exception as exc:
                logger.error("SIP call %s: reject failed: %s: %s", call_id,
                             type(exc).__name__, exc)
            await _in_thread(_refused)(call.pk, status, "refused", why)
            return HttpResponse(status=200)

        runner = runner_class(incoming)
        config = await _in_thread(runner.prepare)(agent)
        model = session_model(runner.get_overrides())
        try:
            await client.realtime.calls.accept(call_id, **accept_arguments(config, model))
        except Exception as exc:
            error = f"accept failed: {type(exc).__name__}: {exc}"[:500]
            logger.error("SIP call %s: %s", call_id, error)
            await _in_thread(_refused)(call.pk, Call.Status.FAILED, "openai_error", error)
            return HttpResponse(status=200)
        logger.info("SIP call %s from %s to %s accepted (agent %s)", call_id,
                    incoming.from_number, incoming.to_number, agent)
        runner.start(call.pk)
        return HttpResponse(status=200)

    return incoming_sip_call


incoming_sip_call = make_view()
