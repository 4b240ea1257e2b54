"""Outbound calls: :func:`place_call` dials a number and connects the callee to an agent.

The call is created through Twilio's REST API (``client.calls.create``). When the callee
answers, Twilio fetches the answer URL (:func:`voiceconv.telephony_views.outbound_answer`),
which answers the same ``<Connect><Stream>`` TwiML as an incoming call, with a stream token
minted then and bound to the CallSid. The ``Call`` row (``direction = "outbound-api"``, Twilio's
own word for calls made through its API) is recorded before Twilio is asked, so every attempt
is on record; Twilio's refusals are recorded on it, logged in one line and raised as
:class:`OutboundCallError`.

Answering-machine detection runs asynchronously (``AsyncAmd``): the agent talks at once and
Twilio posts its verdict to :func:`voiceconv.telephony_views.amd_status`, which hands it to the
live call through the channel layer (see :mod:`voiceconv.amd`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from twilio.base.exceptions import TwilioRestException

from voiceconv import security
from voiceconv.conf import voiceconv_settings
from voiceconv.exceptions import ConfigurationError, VoiceconvError
from voiceconv.models import Agent, AgentTelephony, Call
from voiceconv.phone import normalize_number
from voiceconv.twilio_rest import get_twilio_client

__all__ = [
    "OUTBOUND_DIRECTION",
    "OutboundCallError",
    "aplace_call",
    "normalize_e164",
    "place_call",
]

logger = logging.getLogger("voiceconv.calls")

#: ``Call.direction`` of calls placed here (Twilio reports ``outbound-api`` for them too).
OUTBOUND_DIRECTION = "outbound-api"
#: ``<Parameter>`` names the stream itself uses; custom parameters may not take them.
RESERVED_PARAMETERS = frozenset(
    {"call_sid", "from", "to", "direction", "caller_name", "forwarded_from", "agent",
     "call_token"}
)
#: Twilio's ``MachineDetection`` values.
MACHINE_DETECTION_MODES = ("Enable", "DetectMessageEnd")
#: Call progress events asked for on the status callback (``initiated`` reports ``queued``,
#: a status the ``Call`` row does not keep).
STATUS_EVENTS = ["ringing", "answered", "completed"]


#: What Twilio's REST error codes mean for someone placing a call.
TWILIO_ERRORS: dict[int, str] = {
    13223: "the number to call is not a valid phone number",
    13224: "the number to call is not a valid phone number",
    13227: "the account has no permission to call this country (geo permissions)",
    21210: "the caller ID is not verified on this Twilio account",
    21211: "the number to call is not a valid phone number",
    21212: "the caller ID is not a valid phone number",
    21213: "the caller ID is required",
    21214: "the number to call cannot be reached",
    21215: "the account has no permission to call this number (geo permissions)",
    21216: "the account is not allowed to call this number (blocked)",
    21217: "the number to call does not appear to be valid",
    21219: "the number to call is not verified (Twilio trial accounts call verified numbers only)",
    21220: "the call is not in progress",
    20003: "Twilio refused the credentials (TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN)",
    20429: "Twilio is rate limiting this account",
}


class OutboundCallError(VoiceconvError):
    """A call could not be placed: bad input, a limit, or Twilio refused.

    ``reason`` is a short code (``invalid_number``, ``unknown_agent``, ``concurrent_limit``,
    ``rate_limit``, ``twilio``, ``unreachable``, ``bad_parameters``); ``call`` is the recorded
    failed ``Call`` when Twilio was asked (else ``None``); ``twilio_code`` is Twilio's error code.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        call: Call | None = None,
        twilio_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.call = call
        self.twilio_code = twilio_code


def normalize_e164(number: str) -> str:
    """``number`` as E.164 (``+14155550100``), through :func:`voiceconv.phone.normalize_number`.

    Raises :class:`~voiceconv.exceptions.InvalidPhoneNumberError` (a ``ValueError``) for
    anything that is not a valid international number.
    """
    return normalize_number(number)


@dataclass(frozen=True)
class _Plan:
    """What :func:`place_call` decided before asking Twilio."""

    call_pk: int
    to: str
    from_: str
    params: dict[str, Any]


def _resolve_agent(agent: Agent | int | str | None) -> Agent | None:
    if agent is None:
        default: Agent | None = Agent.objects.filter(enabled=True, is_default=True).first()
        return default
    if isinstance(agent, Agent):
        return agent
    found: Agent | None = None
    if isinstance(agent, int) or (isinstance(agent, str) and agent.isdigit()):
        found = Agent.objects.filter(pk=int(agent)).first()
    if found is None and isinstance(agent, str):
        found = Agent.objects.filter(slug=agent).first()
    if found is None:
        raise OutboundCallError(f"no agent {agent!r} (give its slug or id)",
                                reason="unknown_agent")
    return found


def _machine_detection(value: str | bool | None, telephony: AgentTelephony) -> str:
    """Twilio's ``MachineDetection`` value, or "" for none."""
    if value is None:
        needed = (
            telephony.on_machine != AgentTelephony.OnMachine.TALK
            or telephony.greeting_wait == AgentTelephony.GreetingWait.AMD
        )
        return telephony.machine_detection() if needed else ""
    if value is False or value in ("", "off", "none"):
        return ""
    if value is True:
        return telephony.machine_detection()
    if value in MACHINE_DETECTION_MODES:
        return str(value)
    raise OutboundCallError(
        f"machine_detection must be one of {', '.join(MACHINE_DETECTION_MODES)}, True, False "
        f"or None, not {value!r}",
        reason="bad_parameters",
    )


def _absolute(origin: str, view_name: str, **query: Any) -> str:
    url = origin + reverse(view_name)
    if query:
        url += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    return url


def _reserve(
    to: str,
    agent: Agent | int | str | None,
    from_: str | None,
    custom_parameters: Mapping[str, Any] | None,
    machine_detection: str | bool | None,
    status_callback: bool | str,
) -> _Plan:
    """Validate, check the agent's limits and record the call (in one transaction)."""
    try:
        number = normalize_e164(to)
    except ValueError as exc:
        raise OutboundCallError(str(exc), reason="invalid_number") from exc
    params = {str(k): str(v) for k, v in (custom_parameters or {}).items()}
    clash = sorted(RESERVED_PARAMETERS & set(params))
    if clash:
        raise OutboundCallError(
            f"custom parameter names {', '.join(clash)} are reserved by voiceconv",
            reason="bad_parameters",
        )
    origin = security.public_origin()
    if not origin:
        raise ConfigurationError(
            "VOICECONV['PUBLIC_URL'] is required to place calls: Twilio fetches the call's "
            "TwiML and posts its callbacks there."
        )

    with transaction.atomic():
        resolved = _resolve_agent(agent)
        if resolved is not None:
            # Serialise placements per agent so two callers cannot both pass the limits.
            resolved = Agent.objects.select_for_update().get(pk=resolved.pk)
            if not resolved.enabled:
                raise OutboundCallError(f"agent {resolved} is disabled", reason="unknown_agent")
        telephony = AgentTelephony.for_agent(resolved)
        caller_id = from_ or telephony.outbound_caller_id()
        if not caller_id:
            raise OutboundCallError(
                "no caller ID: pass from_, give the agent a number or a caller ID, "
                "or set VOICECONV['OUTBOUND_CALLER_ID']",
                reason="invalid_number",
            )
        try:
            caller_id = normalize_e164(caller_id)
        except ValueError as exc:
            raise OutboundCallError(f"caller ID: {exc}", reason="invalid_number") from exc
        detection = _machine_detection(machine_detection, telephony)

        now = timezone.now()
        outbound = Call.objects.filter(agent=resolved, direction=OUTBOUND_DIRECTION)
        cap = telephony.concurrent_limit()
        if cap:
            # Rows older than the longest possible call cannot be live any more.
            horizon = voiceconv_settings.MAX_CALL_SECONDS or 4 * 3600.0
            horizon += (voiceconv_settings.OUTBOUND_RING_TIMEOUT or 60) + 60
            active = outbound.filter(
                ended_at__isnull=True,
                status__in=[Call.Status.RINGING, Call.Status.IN_PROGRESS],
                created_at__gte=now - timedelta(seconds=horizon),
            ).count()
            if active >= cap:
                raise OutboundCallError(
                    f"agent {resolved or 'default'} has {active} outbound calls in progress "
                    f"(limit {cap})",
                    reason="concurrent_limit",
                )
        per_minute = telephony.per_minute_limit()
        if per_minute:
            recent = outbound.filter(created_at__gte=now - timedelta(seconds=60)).count()
            if recent >= per_minute:
                raise OutboundCallError(
                    f"agent {resolved or 'default'} placed {recent} calls in the last minute "
                    f"(limit {per_minute})",
                    reason="rate_limit",
                )
        call = Call.objects.create(
            twilio_call_sid=f"pending-{uuid.uuid4().hex}",
            agent=resolved,
            direction=OUTBOUND_DIRECTION,
            from_number=caller_id,
            to_number=number,
            custom_parameters=params,
            status=Call.Status.RINGING,
        )

    create: dict[str, Any] = {
        "to": number,
        "from_": caller_id,
        "url": _absolute(origin, "voiceconv:outbound-answer", call=call.pk),
        "method": "POST",
        "timeout": voiceconv_settings.OUTBOUND_RING_TIMEOUT or 60,
    }
    if status_callback:
        create["status_callback"] = (
            status_callback if isinstance(status_callback, str)
            else _absolute(origin, "voiceconv:call-status")
        )
        create["status_callback_event"] = STATUS_EVENTS
        create["status_callback_method"] = "POST"
    if detection:
        create["machine_detection"] = detection
        create["async_amd"] = "true"
        create["async_amd_status_callback"] = _absolute(origin, "voiceconv:amd-status")
        create["async_amd_status_callback_method"] = "POST"
    return _Plan(call.pk, number, caller_id, create)


def _create_remote(plan: _Plan) -> tuple[str | None, OutboundCallError | None]:
    """Ask Twilio to place the call: its CallSid, or the error to record (never raises)."""
    client = None
    try:
        client = get_twilio_client()
        resource = client.calls.create(**plan.params)
        return str(resource.sid), None
    except TwilioRestException as exc:
        code = int(exc.code) if exc.code else None
        meaning = TWILIO_ERRORS.get(code or 0, "Twilio refused the call")
        message = f"Twilio error {code or exc.status}: {meaning} ({exc.msg})"
        return None, OutboundCallError(message, reason="twilio", twilio_code=code)
    except ImproperlyConfigured:
        raise
    except Exception as exc:  # network, TLS, a bad answer
        message = f"Twilio's REST API could not be reached: {type(exc).__name__}: {exc}"
        return None, OutboundCallError(message, reason="unreachable")
    finally:
        session = getattr(getattr(client, "http_client", None), "session", None)
        if session is not None:
            session.close()


def _record_result(plan: _Plan, sid: str | None, error: OutboundCallError | None) -> Call:
    call: Call = Call.objects.get(pk=plan.call_pk)
    if error is None:
        assert sid is not None
        # The answer view may have seen the CallSid first; only a placeholder is replaced.
        Call.objects.filter(pk=call.pk, twilio_call_sid__startswith="pending-").update(
            twilio_call_sid=sid, updated_at=timezone.now()
        )
        call.refresh_from_db()
        logger.info("call %s: dialling %s from %s (agent %s)", sid, plan.to, plan.from_,
                    call.agent_id or "default")
        return call
    call.status = Call.Status.FAILED
    call.end_reason = Call.EndReason.ERROR
    call.error = str(error)
    call.ended_at = timezone.now()
    call.save(update_fields=["status", "end_reason", "error", "ended_at", "updated_at"])
    logger.error("outbound call to %s failed: %s", plan.to, error)
    error.call = call
    return call


def place_call(
    to: str,
    *,
    agent: Agent | int | str | None = None,
    from_: str | None = None,
    custom_parameters: Mapping[str, Any] | None = None,
    machine_detection: str | bool | None = None,
    status_callback: bool | str = True,
) -> Call:
    """Dial ``to`` and connect the callee to ``agent`` (an ``Agent``, its slug or id; default:
    the default agent). Returns the recorded ``Call``; Twilio's CallSid is on it.

    ``from_`` is the caller ID (default: the agent's caller ID or first number, else
    ``VOICECONV["OUTBOUND_CALLER_ID"]``). ``custom_parameters`` reach the stream and the tools'
    ``state``. ``machine_detection``: ``None`` = as the agent's answering-machine policy needs,
    ``True``/``"Enable"``/``"DetectMessageEnd"`` or ``False``. ``status_callback``: ``True`` =
    voiceconv's status view, a URL, or ``False``.

    Raises :class:`OutboundCallError` (bad number, unknown agent, a limit reached, Twilio
    refused or unreachable: then ``error.call`` is the failed, recorded call) and
    ``ImproperlyConfigured`` without credentials or ``PUBLIC_URL``.
    """
    plan = _reserve(to, agent, from_, custom_parameters, machine_detection, status_callback)
    sid, error = _create_remote(plan)
    call = _record_result(plan, sid, error)
    if error is not None:
        raise error
    return call


async def aplace_call(
    to: str,
    *,
    agent: Agent | int | str | None = None,
    from_: str | None = None,
    custom_parameters: Mapping[str, Any] | None = None,
    machine_detection: str | bool | None = None,
    status_callback: bool | str = True,
) -> Call:
    """:func:`place_call` for async code: the ORM in Django's sync thread, the HTTP request
    in a worker thread of its own, so a slow Twilio never holds up other database work."""
    plan = await sync_to_async(_reserve)(
        to, agent, from_, custom_parameters, machine_detection, status_callback
    )
    sid, error = await asyncio.to_thread(_create_remote, plan)
    call = await sync_to_async(_record_result)(plan, sid, error)
    if error is not None:
        raise error
    return call
