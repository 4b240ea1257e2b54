"""Calls and their transcripts.

A :class:`Call` records one phone call from webhook to hang-up; its :class:`TranscriptEntry`
rows are the conversation, in order, including what the caller actually heard of an
interrupted assistant turn. The two live together: each needs the other. ``Call.objects``, the
database work of the webhooks and the stream start, is in :mod:`voiceconv.models.call_manager`;
agents are in :mod:`voiceconv.models.agents`, prices in :mod:`voiceconv.models.pricing` (both
importable from here too, as before).
"""

from __future__ import annotations

import statistics
from decimal import Decimal
from typing import Any

from django.db import models, transaction
from django.db.models import F, Max, Min, Q
from django.utils.translation import gettext_lazy as _

from voiceconv.conf import voiceconv_settings
from voiceconv.models.agents import Agent
from voiceconv.models.call_manager import CallManager
from voiceconv.models.pricing import estimate_cost, prices_for, session_cost
from voiceconv.pricing import cost_per_minute

__all__ = ["Agent", "Call", "CallManager", "TranscriptEntry", "TranscriptEntryManager",
           "estimate_cost", "prices_for"]

# --- calls -------------------------------------------------------------------------------------


class Call(models.Model):
    """One phone call: who, which agent, when, how it ended, what it cost."""

    class Status(models.TextChoices):
        RINGING = "ringing", _("ringing")
        IN_PROGRESS = "in-progress", _("in progress")
        COMPLETED = "completed", _("completed")
        FAILED = "failed", _("failed")
        BUSY = "busy", _("busy")
        NO_ANSWER = "no-answer", _("no answer")
        CANCELED = "canceled", _("canceled")

    class EndReason(models.TextChoices):
        CALLER_HUNG_UP = "caller_hung_up", _("caller hung up")
        AGENT_ENDED = "agent_ended", _("agent ended the call")
        TRANSFERRED = "transferred", _("transferred")
        OPENAI_ERROR = "openai_error", _("OpenAI error")
        ERROR = "error", _("error")
        LIMIT = "limit", _("limit reached")
        SHUTDOWN = "shutdown", _("server shutdown")
        OPERATOR = "operator", _("ended by an operator")
        LOST = "lost", _("server process lost")

    class Direction(models.TextChoices):
        """Twilio's call directions, and ``browser`` for calls from the admin's softphone."""

        INBOUND = "inbound", _("inbound")
        OUTBOUND_API = "outbound-api", _("outbound (API)")
        OUTBOUND_DIAL = "outbound-dial", _("outbound (dial)")
        BROWSER = "browser", _("browser softphone")

    class Transport(models.TextChoices):
        """How the call's audio reaches the model."""

        MEDIA_STREAM = "media_stream", _("Twilio media stream (through this server)")
        SIP = "sip", _("SIP to OpenAI (audio does not pass through this server)")

    #: Twilio's final call statuses (no status follows them).
    FINAL_STATUSES = frozenset({"completed", "failed", "busy", "no-answer", "canceled"})

    objects = CallManager()

    twilio_call_sid = models.CharField(_("call SID"), max_length=64, unique=True)
    twilio_stream_sid = models.CharField(_("stream SID"), max_length=64, blank=True, db_index=True)
    twilio_account_sid = models.CharField(_("account SID"), max_length=64, blank=True)
    agent = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="calls",
        verbose_name=_("agent"),
    )
    model = models.CharField(
        _("model"), max_length=100, blank=True, help_text=_("Realtime model used (for pricing).")
    )
    direction = models.CharField(
        _("direction"), max_length=32, blank=True, choices=Direction.choices
    )
    transport = models.CharField(
        _("transport"), max_length=16, choices=Transport.choices, default=Transport.MEDIA_STREAM,
    )
    openai_call_id = models.CharField(
        _("OpenAI call id"), max_length=64, blank=True, db_index=True,
        help_text=_("SIP calls: the Realtime call id (rtc_...) from OpenAI's webhook."),
    )
    openai_webhook_id = models.CharField(
        _("OpenAI webhook id"), max_length=128, blank=True,
        help_text=_("SIP calls: the webhook-id of the realtime.call.incoming delivery."),
    )
    from_number = models.CharField(_("from"), max_length=128, blank=True, db_index=True)
    to_number = models.CharField(_("to"), max_length=128, blank=True, db_index=True)
    custom_parameters = models.JSONField(_("custom parameters"), default=dict, blank=True)
    status = models.CharField(
        _("status"), max_length=20, choices=Status.choices, default=Status.RINGING, db_index=True
    )
    end_reason = models.CharField(_("end reason"), max_length=32, blank=True)
    error = models.TextField(_("error"), blank=True)
    traceback = models.TextField(_("traceback"), blank=True)

    webhook_received_at = models.DateTimeField(_("webhook received"), null=True, blank=True)
    stream_started_at = models.DateTimeField(_("stream started"), null=True, blank=True)
    session_ready_at = models.DateTimeField(_("OpenAI session ready"), null=True, blank=True)
    first_audio_at = models.DateTimeField(_("first assistant audio"), null=True, blank=True)
    first_audio_heard_at = models.DateTimeField(
        _("first audio heard"), null=True, blank=True,
        help_text=_("Twilio's first mark echo: the caller has heard the first audio."),
    )
    ended_at = models.DateTimeField(_("ended"), null=True, blank=True)
    duration_seconds = models.FloatField(_("duration (s)"), null=True, blank=True)

    responses = models.PositiveIntegerField(_("responses"), default=0)
    input_tokens = models.PositiveIntegerField(_("input tokens"), default=0)
    output_tokens = models.PositiveIntegerField(_("output tokens"), default=0)
    input_text_tokens = models.PositiveIntegerField(_("input text tokens"), default=0)
    input_audio_tokens = models.PositiveIntegerField(_("input audio tokens"), default=0)
    input_cached_tokens = models.PositiveIntegerField(_("cached input tokens"), default=0)
    input_image_tokens = models.PositiveIntegerField(_("input image tokens"), default=0)
    input_cached_text_tokens = models.PositiveIntegerField(
        _("cached input text tokens"), default=0)
    input_cached_audio_tokens = models.PositiveIntegerField(
        _("cached input audio tokens"), default=0)
    input_cached_image_tokens = models.PositiveIntegerField(
        _("cached input image tokens"), default=0)
    output_text_tokens = models.PositiveIntegerField(_("output text tokens"), default=0)
    output_audio_tokens = models.PositiveIntegerField(_("output audio tokens"), default=0)
    estimated_cost = models.DecimalField(
        _("estimated cost (USD)"), max_digits=12, decimal_places=6, default=Decimal(0)
    )
    session_seconds = models.FloatField(
        _("session seconds"), null=True, blank=True,
        help_text=_("GPT-Live calls: billable seconds of the speech session, as reported."),
    )
    session_paused_seconds = models.FloatField(
        _("paused session seconds"), null=True, blank=True,
        help_text=_("GPT-Live calls: of the session seconds, those billed at the paused "
                    "(standby) rate, when the service reports the split."),
    )
    answered_by = models.CharField(
        _("answered by"), max_length=32, blank=True,
        help_text=_("Twilio's answering-machine verdict (human, machine_start, fax, ...)."),
    )
    machine_detection_ms = models.PositiveIntegerField(
        _("machine detection (ms)"), null=True, blank=True
    )

    #: Which server process holds the live call ("host:pid"), and when it last said so
    #: (``voiceconv.live``): a call whose heartbeat stops is marked ended after a timeout.
    live_process = models.CharField(_("server process"), max_length=128, blank=True)
    heartbeat_at = models.DateTimeField(_("last heartbeat"), null=True, blank=True)

    created_at = models.DateTimeField(_("created"), auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("call")
        verbose_name_plural = _("calls")
        ordering = ["-created_at"]
        permissions = [
            ("control_call", _("Can control live calls")),
            ("place_browser_call", _("Can call agents from the browser softphone")),
        ]
        indexes = [
            models.Index(
                fields=["heartbeat_at"],
                condition=Q(ended_at__isnull=True),
                name="voiceconv_call_live",
            )
        ]

    def __str__(self) -> str:
        parties = " → ".join(p for p in (self.from_number, self.to_number) if p)
        return f"{self.twilio_call_sid} ({parties})" if parties else self.twilio_call_sid

    USAGE_FIELDS = (
        "input_tokens",
        "output_tokens",
        "input_text_tokens",
        "input_audio_tokens",
        "input_cached_tokens",
        "input_image_tokens",
        "input_cached_text_tokens",
        "input_cached_audio_tokens",
        "input_cached_image_tokens",
        "output_text_tokens",
        "output_audio_tokens",
    )

    @property
    def started_at(self) -> Any:
        """When the call began as far as we know (stream start, webhook, or row creation)."""
        return self.stream_started_at or self.webhook_received_at or self.created_at

    @property
    def pricing_model(self) -> str:
        """The model whose prices apply: this call's, its agent's, else ``VOICECONV`` MODEL."""
        if self.model:
            return self.model
        if self.agent_id and self.agent and self.agent.model:
            return self.agent.model
        return voiceconv_settings.MODEL

    @property
    def billed_by_session(self) -> bool:
        """A GPT-Live call: priced by its session seconds, not by tokens."""
        return self.session_seconds is not None or self.pricing_model.startswith("gpt-live")

    def add_usage(self, usage: Any) -> None:
        """Add one ``response.done``'s :class:`~voiceconv.events.Usage` (in memory)."""
        for field in self.USAGE_FIELDS:
            setattr(self, field, getattr(self, field) + max(int(getattr(usage, field, 0) or 0), 0))
        self.responses += 1
        self.estimated_cost = self.compute_cost()

    def compute_cost(self) -> Decimal:
        """Estimated USD cost of the usage so far: tokens (Realtime) and session seconds
        (GPT-Live), each at its own rates."""
        tokens = estimate_cost(
            self.pricing_model,
            **{f: getattr(self, f) for f in self.USAGE_FIELDS
               if f not in ("input_tokens", "output_tokens")},
        )
        if not self.session_seconds:
            return tokens
        return tokens + session_cost(
            self.pricing_model, self.session_seconds, self.session_paused_seconds
        )

    def set_session_seconds(self, seconds: float, paused_seconds: float | None = None) -> None:
        """A GPT-Live session's cumulative billable seconds (and paused share), in memory; the
        estimated cost follows."""
        self.session_seconds = float(seconds)
        self.session_paused_seconds = None if paused_seconds is None else float(paused_seconds)
        self.estimated_cost = self.compute_cost()

    def cost_summary(self) -> dict[str, Any]:
        """What the call cost, as exported: the model priced, the estimate, per minute, and
        what it was computed from."""
        per_minute = self.cost_per_minute
        return {
            "model": self.pricing_model,
            "estimated_cost_usd": str(self.estimated_cost),
            "cost_per_minute_usd": None if per_minute is None else str(per_minute),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "session_seconds": self.session_seconds,
            "session_paused_seconds": self.session_paused_seconds,
        }

    #: The call's start, step by step: (name, field), in order.
    MILESTONES = (
        ("webhook_received", "webhook_received_at"),
        ("stream_started", "stream_started_at"),
        ("session_ready", "session_ready_at"),
        ("first_audio_sent", "first_audio_at"),
        ("first_audio_heard", "first_audio_heard_at"),
    )

    def start_timings(self) -> dict[str, int | None]:
        """Milliseconds from the webhook (else the stream start) to each step of the start;
        None for a step not reached (or not recorded)."""
        origin = self.webhook_received_at or self.stream_started_at
        out: dict[str, int | None] = {}
        for name, field in self.MILESTONES:
            value = getattr(self, field)
            out[name] = (
                None if value is None or origin is None
                else round((value - origin).total_seconds() * 1000)
            )
        return out

    @property
    def cost_per_minute(self) -> Decimal | None:
        """Estimated USD cost per minute of this call (None without a duration)."""
        return cost_per_minute(self.estimated_cost, self.duration_seconds)

    @property
    def turn_count(self) -> int:
        """Caller and assistant turns (uses a ``turns`` annotation when present)."""
        annotated = getattr(self, "turns", None)
        if annotated is not None:
            return int(annotated)
        return self.transcript_entries.filter(
            role__in=[TranscriptEntry.Role.CALLER, TranscriptEntry.Role.ASSISTANT]
        ).count()

    @property
    def response_latencies(self) -> list[int]:
        """Assistant response latencies in ms, in call order (prefetch-aware)."""
        prefetched = getattr(self, "assistant_latencies", None)
        if prefetched is not None:
            return [e.latency_ms for e in prefetched if e.latency_ms is not None]
        latencies = self.transcript_entries.filter(
            role=TranscriptEntry.Role.ASSISTANT, latency_ms__isnull=False
        ).values_list("latency_ms", flat=True)
        return [n for n in latencies if n is not None]

    @property
    def median_latency_ms(self) -> float | None:
        """Median assistant response latency in ms, or ``None`` without measured turns."""
        values = self.response_latencies
        return statistics.median(values) if values else None


#: Added to ``sequence`` while entries make room for an earlier one (two updates rather than
#: one, so the unique ``(call, sequence)`` constraint holds after each row on every database).
_SEQUENCE_SHIFT = 1_000_000


class TranscriptEntryManager(models.Manager["TranscriptEntry"]):
    """Adds :meth:`add_in_order`."""

    def add_in_order(self, call: Call, **fields: Any) -> TranscriptEntry:
        """Save an entry of ``call`` at its place in the conversation, and return it.

        Entries are written in the order they *finish*: a caller's turn is transcribed after
        the answer to it has started, a tool's entry is written when it returns. ``sequence``
        is the order they *happened* in the call, by ``offset_ms`` (the caller's speech start,
        the tool's call, the assistant's first audio): the new entry goes before every entry
        that began later, and those move one place down. An entry without an offset goes last.
        ``write_sequence`` keeps the order of writing.

        Writers of one call are serialised (the call's row is locked); saving an entry with
        the ``openai_item_id`` of one already saved (a retried write) returns that entry.
        """
        offset = fields.get("offset_ms")
        item_id = fields.get("openai_item_id") or ""
        # No savepoint of its own: the record writer already wraps each record in one, and an
        # error here then rolls back to it (outside a transaction this still opens one).
        with transaction.atomic(using=self.db, savepoint=False):
            list(Call.objects.using(self.db).select_for_update().filter(pk=call.pk).values("pk"))
            entries = self.filter(call=call)
            if item_id:
                existing = entries.filter(openai_item_id=item_id, role=fields.get("role")).first()
                if existing is not None:
                    return existing
            # One query: the last places, and the first entry that began after this one.
            aggregates: dict[str, Any] = {
                "last_sequence": Max("sequence"), "last_written": Max("write_sequence")}
            if offset is not None:
                aggregates["later"] = Min("sequence", filter=Q(offset_ms__gt=offset))
            last = entries.aggregate(**aggregates)
            position = last.get("later")
            if position is None:
                position = (last["last_sequence"] or 0) + 1
            else:
                entries.filter(sequence__gte=position).update(
                    sequence=F("sequence") + _SEQUENCE_SHIFT
                )
                entries.filter(sequence__gte=_SEQUENCE_SHIFT).update(
                    sequence=F("sequence") - (_SEQUENCE_SHIFT - 1)
                )
            return self.create(
                call=call,
                sequence=position,
                write_sequence=(last["last_written"] or 0) + 1,
                **fields,
            )


class TranscriptEntry(models.Model):
    """One turn of a call's conversation.

    ``sequence`` orders a call's entries as they happened (see
    :meth:`TranscriptEntryManager.add_in_order`); ``write_sequence`` as they were written.
    """

    class Role(models.TextChoices):
        CALLER = "caller", _("caller")
        ASSISTANT = "assistant", _("assistant")
        TOOL = "tool", _("tool")
        SYSTEM = "system", _("system")
        DTMF = "dtmf", _("DTMF")
        CONTROL = "control", _("control")

    call = models.ForeignKey(
        Call, on_delete=models.CASCADE, related_name="transcript_entries", verbose_name=_("call")
    )
    sequence = models.PositiveIntegerField(
        _("sequence"), help_text=_("Place in the conversation, by when the turn began.")
    )
    write_sequence = models.PositiveIntegerField(
        _("write sequence"), null=True, blank=True,
        help_text=_("Order in which the entry was written (turns finish out of order)."),
    )
    role = models.CharField(_("role"), max_length=16, choices=Role.choices)
    text = models.TextField(_("text"), blank=True)
    openai_item_id = models.CharField(_("Realtime item id"), max_length=64, blank=True)
    offset_ms = models.IntegerField(_("offset (ms)"), null=True, blank=True)
    latency_ms = models.IntegerField(_("response latency (ms)"), null=True, blank=True)
    interrupted = models.BooleanField(_("interrupted"), default=False)
    heard_ms = models.IntegerField(_("heard (ms)"), null=True, blank=True)
    total_ms = models.IntegerField(_("generated audio (ms)"), null=True, blank=True)
    heard_text = models.TextField(_("heard text"), blank=True)
    first_audio_ms = models.FloatField(
        _("to first audio (ms)"), null=True, blank=True,
        help_text=_("Answers to the caller: speech_stopped received → the answer's first audio "
                    "sent to Twilio; the model's share plus the bridge's."),
    )
    model_ms = models.FloatField(
        _("model's share (ms)"), null=True, blank=True,
        help_text=_("Answers to the caller: speech_stopped → the first audio delta received."),
    )
    bridge_ms = models.FloatField(
        _("bridge's share (ms)"), null=True, blank=True,
        help_text=_("The first audio delta received → sent to Twilio."),
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    objects = TranscriptEntryManager()

    class Meta:
        verbose_name = _("transcript entry")
        verbose_name_plural = _("transcript entries")
        ordering = ["call", "sequence"]
        constraints = [
            models.UniqueConstraint(
                fields=["call", "sequence"], name="voiceconv_transcriptentry_call_sequence"
            )
        ]

    def __str__(self) -> str:
        return f"{self.sequence} {self.role}: {self.text[:60]}"

    @property
    def unheard_text(self) -> str:
        """For an interrupted turn, the tail of ``text`` the caller never heard."""
        if not self.interrupted:
            return ""
        if self.text.startswith(self.heard_text):
            return self.text[len(self.heard_text):]
        return ""

    @property
    def heard_part(self) -> str:
        """What the caller heard: the whole text, or the heard prefix when interrupted."""
        if not self.interrupted:
            return self.text
        return self.heard_text if self.text.startswith(self.heard_text) else self.text
