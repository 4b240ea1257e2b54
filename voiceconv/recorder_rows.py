"""A call's records as rows: what the recorder's items do in the database.

The process-wide writer (:mod:`voiceconv.writer`) runs :meth:`CallRows.apply` in its thread,
inside its transaction, for each item a :class:`~voiceconv.recorder.CallRecorder` queued; each
``_apply_<kind>`` returns the signals (and user callbacks) to run once that transaction has
committed. The database work of the recorder lives here and nowhere else.
"""

from __future__ import annotations

import collections
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from django.db import transaction as db_transaction
from django.db.models import Q
from django.utils import timezone

from voiceconv import signals
from voiceconv.calllog import CallLog
from voiceconv.conf import voiceconv_settings
from voiceconv.events import CallInfo, TranscriptTurn
from voiceconv.models import Agent, Call, ToolInvocation, TranscriptEntry
from voiceconv.transcripts import estimate_heard_text

__all__ = ["CallRows", "Dispatch", "Item", "signal_names"]

#: End reasons that mark a call ``failed`` when they come with an error.
ERROR_REASONS = frozenset({"error", "openai_error"})


@dataclass(slots=True)
class Item:
    """One queued write."""

    kind: str
    payload: Any
    at: dt.datetime = field(default_factory=timezone.now)

    def __repr__(self) -> str:
        return f"<{self.kind} at {self.at.isoformat()}: {self.payload!r}>"


@dataclass(slots=True)
class Dispatch:
    """Signal (and callback) to run after an item was saved."""

    signal: Any
    kwargs: dict[str, Any]
    callback: Callable[..., Any] | None = None
    text: str = ""

    def __repr__(self) -> str:
        name = next((n for n, s in _SIGNAL_NAMES.items() if s is self.signal), "signal")
        return f"<{name} {self.kwargs!r}>"


_SIGNAL_NAMES = {
    "call_started": signals.call_started,
    "transcript_entry": signals.transcript_entry,
    "tool_invoked": signals.tool_invoked,
    "call_ended": signals.call_ended,
}


def signal_names(dispatches: list[Dispatch]) -> str:
    counts = collections.Counter(
        next((n for n, s in _SIGNAL_NAMES.items() if s is job.signal), "signal")
        for job in dispatches
    )
    return ", ".join(f"{name} x{count}" for name, count in counts.items())


class CallRows:
    """The recorder's database work (a part of :class:`~voiceconv.recorder.CallRecorder`)."""

    info: CallInfo
    log: CallLog
    on_user_message: Callable[..., Any] | None
    on_assistant_message: Callable[..., Any] | None
    _call: Any

    def apply(self, item: Item) -> list[Dispatch]:
        handler: Callable[[Item], list[Dispatch]] = getattr(self, f"_apply_{item.kind}")
        return handler(item)

    def forget_rows(self) -> None:
        self._call = None

    # Each _apply_* runs in the writer's thread, inside its transaction, and returns the
    # dispatches to run once that transaction has committed.

    def _call_defaults(self) -> dict[str, Any]:
        info = self.info
        agent_id = info.agent_pk
        if agent_id is not None and not Agent.objects.filter(pk=agent_id).exists():
            agent_id = None
        return {
            "twilio_stream_sid": info.stream_sid or "",
            "twilio_account_sid": info.account_sid or "",
            "from_number": info.from_number or "",
            "to_number": info.to_number or "",
            "direction": info.direction or "",
            "custom_parameters": dict(info.custom_parameters or {}),
            "agent_id": agent_id,
        }

    def _call_row(self) -> Any:
        """The call's row, created from the :class:`CallInfo` if the webhook made none."""
        if self._call is None:
            call, created = Call.objects.get_or_create(
                twilio_call_sid=self.info.call_sid, defaults=self._call_defaults()
            )
            if created:
                self.log.info("no Call row from the webhook; created one")
            self._call = call
            self.info.call_pk = call.pk
        return self._call

    def _apply_stream_started(self, item: Item) -> list[Dispatch]:
        self._call = None
        call = self._call_row()
        updates: dict[str, Any] = {"stream_started_at": item.payload}
        if self.info.stream_sid:
            updates["twilio_stream_sid"] = self.info.stream_sid
        if call.status not in Call.FINAL_STATUSES:
            updates["status"] = Call.Status.IN_PROGRESS
        for key, value in self._call_defaults().items():
            if value and not getattr(call, key):
                updates[key] = value
        if not call.model:
            agent_model = ""
            agent_id = updates.get("agent_id", call.agent_id)
            if agent_id:
                row = Agent.objects.filter(pk=agent_id).values_list("model", "backend").first()
                if row is not None:
                    agent_model = row[0] or (
                        voiceconv_settings.GPT_LIVE_MODEL if row[1] == "gpt-live" else ""
                    )
            updates["model"] = agent_model or voiceconv_settings.MODEL
        Call.objects.filter(pk=call.pk).update(**updates, updated_at=timezone.now())
        call.refresh_from_db()
        if self.info.agent_pk is None and call.agent_id:
            self.info.agent_pk = call.agent_id
        return [Dispatch(signals.call_started, {"call": call, "info": self.info})]

    def _apply_first_audio(self, item: Item) -> list[Dispatch]:
        call = self._call_row()
        if Call.objects.filter(pk=call.pk, first_audio_at__isnull=True).update(
            first_audio_at=item.payload
        ):
            call.first_audio_at = item.payload
        return []

    def _apply_turn(self, item: Item) -> list[Dispatch]:
        turn: TranscriptTurn = item.payload
        call = self._call_row()
        heard_text = ""
        if turn.interrupted:
            heard_text = (
                turn.heard_text
                if turn.heard_text is not None
                else estimate_heard_text(turn.text, turn.heard_ms, turn.total_ms)
            )
        fields = {
            "role": turn.role,
            "text": turn.text or "",
            "openai_item_id": turn.item_id or "",
            "offset_ms": turn.offset_ms,
            "latency_ms": turn.latency_ms,
            "interrupted": bool(turn.interrupted),
            "heard_ms": turn.heard_ms,
            "total_ms": turn.total_ms,
            "heard_text": heard_text or "",
            "first_audio_ms": turn.first_audio_ms,
            "model_ms": turn.model_ms,
            "bridge_ms": turn.bridge_ms,
        }
        # At its place in the conversation (a caller's turn is transcribed after the answer
        # began): see TranscriptEntry.objects.add_in_order.
        entry = TranscriptEntry.objects.add_in_order(call, **fields)
        callback = None
        role: str = turn.role
        if role == "caller":
            callback = self.on_user_message
        elif role == "assistant":
            callback = self.on_assistant_message
        return [
            Dispatch(
                signals.transcript_entry,
                {"call": call, "entry": entry, "turn": turn},
                callback=callback,
                text=turn.text,
            )
        ]

    def _apply_usage(self, item: Item) -> list[Dispatch]:
        call = self._call_row()
        # Within the writer's savepoint for this record: no second one (an error rolls back
        # to the writer's; outside a transaction this still opens one).
        with db_transaction.atomic(savepoint=False):
            row = (
                Call.objects.select_for_update(of=("self",))
                .select_related("agent")
                .get(pk=call.pk)
            )
            for usage in item.payload:
                row.add_usage(usage)
            fields = [*Call.USAGE_FIELDS, "responses", "estimated_cost", "updated_at"]
            row.save(update_fields=fields)
        for name in (*Call.USAGE_FIELDS, "responses", "estimated_cost"):
            setattr(call, name, getattr(row, name))
        return []

    #: Milestones by the ``Call`` field that keeps the first of each.
    MILESTONE_FIELDS: ClassVar[dict[str, str]] = {
        "session_ready": "session_ready_at",
        "first_audio_heard": "first_audio_heard_at",
    }

    def _apply_milestone(self, item: Item) -> list[Dispatch]:
        name, at = item.payload
        field_name = self.MILESTONE_FIELDS.get(name)
        if field_name is None:
            return []
        call = self._call_row()
        if Call.objects.filter(pk=call.pk, **{f"{field_name}__isnull": True}).update(
            **{field_name: at}
        ):
            setattr(call, field_name, at)
        return []

    def _apply_session_seconds(self, item: Item) -> list[Dispatch]:
        call = self._call_row()
        seconds, paused = item.payload
        with db_transaction.atomic():
            row = (
                Call.objects.select_for_update(of=("self",))
                .select_related("agent")
                .filter(Q(session_seconds__isnull=True) | Q(session_seconds__lt=seconds),
                        pk=call.pk)
                .first()
            )
            if row is None:
                return []  # not news: the call keeps the largest total
            row.set_session_seconds(seconds, paused)
            row.save(update_fields=[
                "session_seconds", "session_paused_seconds", "estimated_cost", "updated_at"])
        for name in ("session_seconds", "session_paused_seconds", "estimated_cost"):
            setattr(call, name, getattr(row, name))
        return []

    def _apply_tool_invocation(self, item: Item) -> list[Dispatch]:
        result = item.payload
        call = self._call_row()
        invocation = ToolInvocation.objects.create(call=call, **result.as_model_fields())
        return [
            Dispatch(
                signals.tool_invoked, {"call": call, "invocation": invocation, "result": result}
            )
        ]

    def _apply_ended(self, item: Item) -> list[Dispatch]:
        data = item.payload
        reason = str(data.get("reason") or "")
        call = self._call_row()
        call.refresh_from_db()
        updates: dict[str, Any] = {
            "end_reason": reason[:32],
            "ended_at": item.at,
            "updated_at": timezone.now(),
        }
        if data.get("error"):
            updates["error"] = str(data["error"])
        if data.get("traceback"):
            updates["traceback"] = str(data["traceback"])
        if call.status not in Call.FINAL_STATUSES:
            failed = reason in ERROR_REASONS and bool(data.get("error"))
            updates["status"] = Call.Status.FAILED if failed else Call.Status.COMPLETED
        start = call.stream_started_at or call.webhook_received_at
        if call.duration_seconds is None and start is not None:
            updates["duration_seconds"] = round(max((item.at - start).total_seconds(), 0.0), 3)
        Call.objects.filter(pk=call.pk).update(**updates)
        call.refresh_from_db()
        return [Dispatch(signals.call_ended, {"call": call, "reason": reason})]
