"""Admin for agents (editable) and calls (read-only review with the conversation)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Count, IntegerField, OuterRef, Prefetch, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from voiceconv import formatting, monitor
from voiceconv.admin.telephony import RecordingInline, WarmTransferInline
from voiceconv.admin.tools import ToolInvocationInline
from voiceconv.conf import voiceconv_settings
from voiceconv.models import Call, TranscriptEntry
from voiceconv.onboarding import twilio_console_urls
from voiceconv.pricing import PRICES_AS_OF, PRICES_SOURCE, prices_for
from voiceconv.timings import TURN_FIELDS, fine_ms, turn_rows
from voiceconv.transcripts import calls_as_text, iter_entries_jsonl

_TALK_ROLES = [TranscriptEntry.Role.CALLER, TranscriptEntry.Role.ASSISTANT]


def end_reason_label(call: Call) -> str:
    """The call's end reason as a phrase (an unknown value as it is)."""
    if call.end_reason in Call.EndReason.values:
        return str(Call.EndReason(call.end_reason).label)
    return call.end_reason


def conversation_rows(call: Call) -> list[dict[str, Any]]:
    """The call's entries with what the conversation template shows for each."""
    rows = []
    for entry in call.transcript_entries.order_by("sequence"):
        rows.append(
            {
                "entry": entry,
                "clock": formatting.clock(entry.offset_ms),
                "heard": entry.heard_part,
                "unheard": entry.unheard_text,
                "heard_s": formatting.seconds(entry.heard_ms, unit=""),
                "total_s": formatting.seconds(entry.total_ms, unit=""),
                "first_audio": fine_ms(entry.first_audio_ms),
                "model": fine_ms(entry.model_ms),
                "bridge": fine_ms(entry.bridge_ms),
            }
        )
    return rows


@admin.register(Call)
class CallAdmin(admin.ModelAdmin[Call]):
    """Read-only call records: list, search, conversation, export."""

    date_hierarchy = "created_at"
    inlines = [ToolInvocationInline, RecordingInline, WarmTransferInline]
    list_display = (
        "started", "parties", "agent", "status", "ended_because", "duration", "turns",
        "median_latency", "cost", "cost_minute",
    )
    list_display_links = ("started", "parties")
    list_filter = ("status", "agent", "direction", "transport", "created_at", "end_reason")
    search_fields = (
        "twilio_call_sid", "twilio_stream_sid", "openai_call_id", "from_number", "to_number",
        "transcript_entries__text",
    )
    list_select_related = ("agent",)
    list_per_page = 50
    actions = ("export_jsonl", "export_text")
    fieldsets = (
        (None, {"fields": (
            ("from_number", "to_number", "direction", "transport"),
            ("agent", "model"),
            ("status", "end_reason", "answered_by"),
            ("twilio_call_sid", "twilio_stream_sid", "twilio_account_sid"),
            ("openai_call_id", "openai_webhook_id"),
            "custom_parameters",
        )}),
        (_("Timings"), {
            "description": _("Times of day with milliseconds; in brackets, since the webhook."),
            "fields": (
                ("webhook_time", "stream_time", "session_ready_time"),
                ("first_audio_time", "first_heard_time", "end_time"),
                ("duration_seconds", "turn_total", "median_latency"),
                "turn_first_audio",
            ),
        }),
        (_("Usage"), {"fields": (
            ("responses", "input_tokens", "output_tokens", "estimated_cost", "cost_minute"),
            ("input_text_tokens", "input_audio_tokens", "input_image_tokens"),
            ("input_cached_tokens", "input_cached_text_tokens", "input_cached_audio_tokens",
             "input_cached_image_tokens"),
            ("output_text_tokens", "output_audio_tokens"),
            ("session_seconds", "session_paused_seconds"),
            "price_note",
        )}),
        (_("Error"), {"classes": ("collapse",), "fields": ("error", "traceback")}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        names = [f.name for f in Call._meta.concrete_fields]
        return [
            *names, "turn_total", "median_latency", "cost_minute", "price_note",
            "webhook_time", "stream_time", "first_audio_time", "end_time",
            "session_ready_time", "first_heard_time", "turn_first_audio",
        ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Call]:
        turns = (
            TranscriptEntry.objects.filter(call=OuterRef("pk"), role__in=_TALK_ROLES)
            .order_by()
            .values("call")
            .annotate(n=Count("pk"))
            .values("n")
        )
        latencies = TranscriptEntry.objects.filter(
            role=TranscriptEntry.Role.ASSISTANT, latency_ms__isnull=False
        ).only("call_id", "latency_ms", "sequence")
        return (
            super()
            .get_queryset(request)
            .select_related("agent")
            .annotate(turns=Coalesce(Subquery(turns, output_field=IntegerField()), 0))
            .prefetch_related(
                Prefetch("transcript_entries", queryset=latencies, to_attr="assistant_latencies")
            )
        )

    # -- permissions: records are reviewed, not edited ---------------------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)

    # -- columns ------------------------------------------------------------------------------

    @admin.display(description=_("start"), ordering="created_at")
    def started(self, obj: Call) -> str:
        return timezone.localtime(obj.started_at).strftime("%Y-%m-%d %H:%M:%S")

    @admin.display(description=_("end reason"), ordering="end_reason")
    def ended_because(self, obj: Call) -> str | None:
        return end_reason_label(obj) or None

    # The timings: when each step happened, to the millisecond, and how long after the call
    # began (the webhook, else the stream start).

    def _moment(self, obj: Call, value: Any) -> str | None:
        if value is None:
            return None
        start = obj.webhook_received_at or obj.stream_started_at
        text = formatting.timestamp(value, date=value is start)
        if value is not start:
            text += f" ({formatting.relative(value, start)})"
        return text

    @admin.display(description=_("webhook received"))
    def webhook_time(self, obj: Call) -> str | None:
        return self._moment(obj, obj.webhook_received_at)

    @admin.display(description=_("stream started"))
    def stream_time(self, obj: Call) -> str | None:
        return self._moment(obj, obj.stream_started_at)

    @admin.display(description=_("OpenAI session ready"))
    def session_ready_time(self, obj: Call) -> str | None:
        return self._moment(obj, obj.session_ready_at)

    @admin.display(description=_("first assistant audio sent"))
    def first_audio_time(self, obj: Call) -> str | None:
        return self._moment(obj, obj.first_audio_at)

    @admin.display(description=_("first audio heard"))
    def first_heard_time(self, obj: Call) -> str | None:
        return self._moment(obj, obj.first_audio_heard_at)

    @admin.display(description=_("ended"))
    def end_time(self, obj: Call) -> str | None:
        return self._moment(obj, obj.ended_at)

    @admin.display(description=_("parties"))
    def parties(self, obj: Call) -> str:
        return f"{obj.from_number or '?'} → {obj.to_number or '?'}"

    @admin.display(description=_("duration"), ordering="duration_seconds")
    def duration(self, obj: Call) -> str | None:
        return formatting.duration(obj.duration_seconds) or None

    @admin.display(description=_("turns"), ordering="turns")
    def turns(self, obj: Call) -> int:
        return obj.turn_count

    @admin.display(description=_("turns"))
    def turn_total(self, obj: Call) -> int:
        return obj.turn_count

    @admin.display(description=_("median latency"))
    def median_latency(self, obj: Call) -> str | None:
        return formatting.milliseconds(obj.median_latency_ms) or None

    @admin.display(description=_("time to first audio per turn"))
    def turn_first_audio(self, obj: Call) -> str | None:
        """p50 / p90 of the call's turns: caller stopped → first audio sent, and its shares."""
        entries = obj.transcript_entries.filter(role=TranscriptEntry.Role.ASSISTANT).values(
            *(field for _label, field in TURN_FIELDS))
        rows = turn_rows(entries)
        if not rows:
            return None
        return "; ".join(
            f"{label}: p50 {fine_ms(p50)}, p90 {fine_ms(p90)} ({n} turns)"
            for label, p50, p90, n in rows
        )

    @admin.display(description=_("cost"), ordering="estimated_cost")
    def cost(self, obj: Call) -> str:
        return f"${obj.estimated_cost:.4f}"

    @admin.display(description=_("cost / min"))
    def cost_minute(self, obj: Call) -> str | None:
        per_minute = obj.cost_per_minute
        return None if per_minute is None else f"${per_minute:.4f}"

    @admin.display(description=_("prices"))
    def price_note(self, obj: Call) -> str:
        own = " (VOICECONV PRICES)" if obj.pricing_model in (
            voiceconv_settings.PRICES or {}) else ""
        rates = ""
        if obj.billed_by_session:
            p = prices_for(obj.pricing_model)
            rates = (f", ${p['session_active_minute']}/min active, "
                     f"${p['session_paused_minute']}/min paused")
        return f"{obj.pricing_model}{own}{rates}; built-in list prices as of {PRICES_AS_OF}: " \
               f"{PRICES_SOURCE}"

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # The empty list says how to get a first call.
        extra_context = {"console_urls": twilio_console_urls(request), **(extra_context or {})}
        return super().changelist_view(request, extra_context)

    # -- the change page ----------------------------------------------------------------------

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        extra_context = dict(extra_context or {})
        call = self.get_object(request, object_id)
        if call is not None:
            extra_context["conversation"] = conversation_rows(call)
            extra_context["call_summary"] = self.summary(call)
            extra_context.update(monitor.live_context(request, call))
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self) -> list[Any]:
        return monitor.admin_urls(self) + super().get_urls()

    def summary(self, call: Call) -> dict[str, Any]:
        """The strip of key figures above the conversation."""
        status = call.get_status_display()
        if call.end_reason:
            status = f"{status} · {end_reason_label(call)}"
        none = self.get_empty_value_display()
        items = [
            (_("status"), status, "vc-status"),
            (_("agent"), str(call.agent) if call.agent_id else none, ""),
            (_("duration"), formatting.duration(call.duration_seconds) or none, ""),
            (_("turns"), str(call.turn_count), ""),
            (_("median latency"), self.median_latency(call) or none, ""),
            (_("billed session"), formatting.duration(call.session_seconds) or none, "")
            if call.billed_by_session else
            (_("tokens in / out"), f"{call.input_tokens} / {call.output_tokens}", ""),
            (_("cost"), self.cost(call), ""),
            (_("cost / min"), self.cost_minute(call) or none, ""),
        ]
        return {"status": call.status, "items": items}

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or not (obj.error or obj.traceback):
            fieldsets = [fs for fs in fieldsets if fs[0] != _("Error")]
        if obj is not None:
            fieldsets = [self._usage_of_backend(fs, obj) for fs in fieldsets]
        return fieldsets

    #: Usage rows of token-billed (Realtime) calls, and of second-billed (GPT-Live) ones.
    _TOKEN_ROW_FIELDS = frozenset(Call.USAGE_FIELDS) | {"responses"}
    _SESSION_ROW_FIELDS = frozenset({"session_seconds", "session_paused_seconds"})

    def _usage_of_backend(self, fieldset: Any, obj: Call) -> Any:
        """The Usage fieldset shows what the call was billed by: seconds or tokens."""
        name, options = fieldset
        if name != _("Usage"):
            return fieldset
        hidden = self._TOKEN_ROW_FIELDS if obj.billed_by_session else self._SESSION_ROW_FIELDS
        rows = []
        for row in options["fields"]:
            names = (row,) if isinstance(row, str) else tuple(row)
            kept = tuple(n for n in names if n not in hidden)
            if kept:
                rows.append(kept[0] if isinstance(row, str) else kept)
        return (name, {**options, "fields": tuple(rows)})

    # -- export actions -----------------------------------------------------------------------

    @staticmethod
    def _download(body: str, content_type: str, extension: str) -> HttpResponse:
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response = HttpResponse(body, content_type=content_type)
        response["Content-Disposition"] = (
            f'attachment; filename="voiceconv-transcripts-{stamp}.{extension}"'
        )
        return response

    @admin.action(description=_("Export selected transcripts as JSON lines"))
    def export_jsonl(self, request: HttpRequest, queryset: QuerySet[Call]) -> HttpResponse:
        entries = TranscriptEntry.objects.filter(call__in=queryset.values("pk"))
        body = "".join(iter_entries_jsonl(entries))
        return self._download(body, "application/x-ndjson; charset=utf-8", "jsonl")

    @admin.action(description=_("Export selected transcripts as plain text"))
    def export_text(self, request: HttpRequest, queryset: QuerySet[Call]) -> HttpResponse:
        calls = (
            Call.objects.filter(pk__in=queryset.values("pk"))
            .select_related("agent")
            .order_by("created_at", "pk")
        )
        return self._download(calls_as_text(calls), "text/plain; charset=utf-8", "txt")
