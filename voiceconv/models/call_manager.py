"""The database work of a call's webhooks and its stream start, as the ``Call`` manager.

:class:`CallManager` is ``Call.objects``: the incoming-call webhook
(:meth:`~CallManager.record_webhook`), Twilio's status callback
(:meth:`~CallManager.record_status`), OpenAI's SIP webhook (:meth:`~CallManager.record_sip_call`)
and the stream's ``start`` (:meth:`~CallManager.claim_stream`). The views and the consumer call
these and hold no ORM code of their own. Importable as ``voiceconv.models.calls.CallManager``.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from django.db import models
from django.utils import timezone

from voiceconv.events import CallInfo, our_number
from voiceconv.models.agents import Agent

if TYPE_CHECKING:
    from voiceconv.models.calls import Call

__all__ = ["CallManager"]


class CallManager(models.Manager["Call"]):
    """The database work of the webhooks and the stream start: :meth:`record_webhook`,
    :meth:`record_status`, :meth:`claim_stream`."""

    def record_webhook(
        self,
        call_sid: str,
        *,
        account_sid: str = "",
        from_number: str = "",
        to_number: str = "",
        direction: str = "",
        status: str = "",
        received_at: dt.datetime | None = None,
    ) -> tuple[Call, Agent | None]:
        """The incoming-call webhook: pick the agent for our number (:func:`our_number`:
        the number called for inbound calls, the one we call from for outbound ones) and
        record the call (written off the webhook's response path, see
        :mod:`voiceconv.webhook_records`).

        The stream's claim may have created the row first (it does when it gets there before
        this record): then only what it lacks is filled in and its status is kept. A retried
        webhook for a call whose stream has not started refreshes the row.
        Returns the row and the agent (``None``: the default configuration).
        """
        agent = Agent.objects.for_number(our_number(direction, from_number, to_number))
        received_at = received_at or timezone.now()
        fields: dict[str, Any] = {
            "twilio_account_sid": account_sid,
            "agent": agent,
            "direction": direction,
            "from_number": from_number,
            "to_number": to_number,
            "status": status or self.model.Status.RINGING,
            "webhook_received_at": received_at,
        }
        call, created = self.get_or_create(twilio_call_sid=call_sid, defaults=fields)
        if created:
            return call, agent
        if self.filter(pk=call.pk, twilio_stream_sid="").update(**fields):
            for name, value in fields.items():
                setattr(call, name, value)
            return call, agent
        # The stream is there already: keep its status and agent, add what it lacks.
        lacking = {name: value for name, value in fields.items() if value and name != "status"
                   and not getattr(call, "agent_id" if name == "agent" else name)}
        lacking["webhook_received_at"] = received_at
        self.filter(pk=call.pk).update(**lacking)
        for name, value in lacking.items():
            setattr(call, name, value)
        return call, call.agent

    def record_status(
        self,
        call_sid: str,
        *,
        status: str = "",
        duration: float | None = None,
        account_sid: str = "",
        from_number: str = "",
        to_number: str = "",
        direction: str = "",
    ) -> tuple[Call, bool]:
        """Twilio's status callback: its status and duration replace ours.

        A callback for a call never seen creates the row, so every billed call is on record.
        Returns the row (as updated) and whether it was created.
        """
        call, created = self.get_or_create(
            twilio_call_sid=call_sid,
            defaults={
                "twilio_account_sid": account_sid,
                "from_number": from_number,
                "to_number": to_number,
                "direction": direction,
            },
        )
        updates: dict[str, Any] = {}
        if status:
            updates["status"] = status
        if duration is not None:
            updates["duration_seconds"] = duration
        if status in self.model.FINAL_STATUSES and call.ended_at is None:
            updates["ended_at"] = timezone.now()
        if updates:
            updates["updated_at"] = timezone.now()
            self.filter(pk=call.pk).update(**updates)
            for name, value in updates.items():
                setattr(call, name, value)
        return call, created

    def record_sip_call(self, incoming: Any) -> tuple[Call, Agent | None, bool]:
        """OpenAI's ``realtime.call.incoming`` webhook (a
        :class:`voiceconv.sip.IncomingSipCall`): record the call once per OpenAI call id and
        pick the agent answering the number called.

        Returns the row, its agent and whether this delivery created it (``False``: a retry
        of a webhook already handled, which must not be answered twice).
        """
        agent = Agent.objects.for_number(incoming.to_number)
        call, created = self.get_or_create(
            twilio_call_sid=incoming.call_id,
            defaults={
                "transport": self.model.Transport.SIP,
                "openai_call_id": incoming.call_id,
                "openai_webhook_id": incoming.webhook_id,
                "agent": agent,
                "direction": self.model.Direction.INBOUND,
                "from_number": incoming.from_number,
                "to_number": incoming.to_number,
                "custom_parameters": incoming.custom_parameters(),
                "status": self.model.Status.RINGING,
                "webhook_received_at": timezone.now(),
            },
        )
        return call, (agent if created else call.agent), created

    def claim_stream(self, info: CallInfo) -> tuple[Call, Agent | None] | str:
        """Claim the call ``info`` describes for its media stream (sync; at stream start).

        Creates the row when the webhook did not, picks the agent (an enabled ``agent`` custom
        parameter, else the call's, else the one answering our number: :func:`our_number`),
        and sets ``twilio_stream_sid`` only where it is empty. Returns the call and its agent,
        or the reason to refuse the stream (another stream has the call).
        """
        call = self.filter(twilio_call_sid=info.call_sid).select_related("agent").first()
        if call is None:
            # The webhook's row may be written at this very moment (off its response path, by
            # the process-wide writer): get_or_create takes the other row if the insert races.
            call, _created = self.select_related("agent").get_or_create(
                twilio_call_sid=info.call_sid,
                defaults={
                    "twilio_account_sid": info.account_sid,
                    "agent": Agent.objects.for_number(
                        our_number(info.direction, info.from_number, info.to_number)
                    ),
                    "direction": info.direction,
                    "from_number": info.from_number,
                    "to_number": info.to_number,
                    "status": "in-progress",
                },
            )
        claimed = self.filter(pk=call.pk, twilio_stream_sid="").update(
            twilio_stream_sid=info.stream_sid,
            stream_started_at=timezone.now(),
            status="in-progress",
            custom_parameters=info.custom_parameters,
        )
        if not claimed:
            return f"call already has stream {call.twilio_stream_sid}"
        agent = call.agent
        agent_pk = info.custom_parameters.get("agent", "")
        if agent_pk.isdigit():
            agent = Agent.objects.filter(pk=int(agent_pk), enabled=True).first() or agent
        return call, agent
