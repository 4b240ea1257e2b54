"""Admin for agents (editable) and calls (read-only review with the conversation)."""

from __future__ import annotations

import json
import logging
from typing import Any

from django.contrib import admin
from django.db.models import Count, IntegerField, OuterRef, Prefetch, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from voiceconv.admin.tools import ToolInvocationInline
from voiceconv.models import Agent, Call, TranscriptEntry
from voiceconv.transcripts import calls_as_text, iter_entries_jsonl

logger = logging.getLogger("voiceconv.admin")

_TALK_ROLES = [TranscriptEntry.Role.CALLER, TranscriptEntry.Role.ASSISTANT]


def _seconds(ms: int | None) -> str:
    return f"{(ms or 0) / 1000:.1f}"


def _clock(ms: int | None) -> str:
    if ms is None:
        return ""
    minutes, seconds = divmod(max(ms, 0) / 1000, 60)
    return f"{int(minutes):02d}:{seconds:04.1f}"


def _duration(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02d}"


def conversation_rows(call: Call) -> list[dict[str, Any]]:
    """The call's entries with what the conversation template shows for each."""
    rows = []
    for entry in call.transcript_entries.order_by("sequence"):
        rows.append(
            {
                "entry": entry,
                "clock": _clock(entry.offset_ms),
                "heard": entry.heard_part,
                "unheard": entry.unheard_text,
                "heard_s": _seconds(entry.heard_ms),
                "total_s": _seconds(entry.total_ms),
            }
        )
    return rows


@admin.register(Call)
class CallAdmin(admin.ModelAdmin):
    """Read-only call records: list, search, conversation, export."""

    date_hierarchy = "created_at"
    inlines = [ToolInvocationInline]
    list_display = (
        "started", "parties", "agent", "status", "duration", "turns", "median_latency", "cost",
    )
    list_display_links = ("started", "parties")
    list_filter = ("status", "agent", "direction", "created_at", "end_reason")
    search_fields = (
        "twilio_call_sid", "twilio_stream_sid", "from_number", "to_number",
        "transcript_entries__text",
    )
    list_select_related = ("agent",)
    list_per_page = 50
    actions = ("export_jsonl", "export_text")
    fieldsets = (
        (None, {"fields": (
            ("from_number", "to_number", "direction"),
            ("agent", "model"),
            ("status", "end_reason"),
            ("twilio_call_sid", "twilio_stream_sid", "twilio_account_sid"),
            "custom_parameters",
        )}),
        (_("Timings"), {"fields": (
            ("webhook_received_at", "stream_started_at", "first_audio_at", "ended_at"),
            ("duration_seconds", "turn_total", "median_latency"),
        )}),
        (_("Usage"), {"fields": (
            ("responses", "input_tokens", "output_tokens", "estimated_cost"),
            ("input_text_tokens", "input_audio_tokens", "input_cached_tokens"),
            ("output_text_tokens", "output_audio_tokens"),
        )}),
        (_("Error"), {"classes": ("collapse",), "fields": ("error", "traceback")}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        names = [f.name for f in Call._meta.concrete_fields]
        return [*names, "turn_total", "median_latency"]

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

    @admin.display(description=_("parties"))
    def parties(self, obj: Call) -> str:
        return f"{obj.from_number or '?'} → {obj.to_number or '?'}"

    @admin.display(description=_("duration"), ordering="duration_seconds")
    def duration(self, obj: Call) -> str | None:
        return _duration(obj.duration_seconds)

    @admin.display(description=_("turns"), ordering="turns")
    def turns(self, obj: Call) -> int:
        return obj.turn_count

    @admin.display(description=_("turns"))
    def turn_total(self, obj: Call) -> int:
        return obj.turn_count

    @admin.display(description=_("median latency"))
    def median_latency(self, obj: Call) -> str | None:
        value = obj.median_latency_ms
        return None if value is None else f"{value:.0f} ms"

    @admin.display(description=_("cost"), ordering="estimated_cost")
    def cost(self, obj: Call) -> str:
        return f"${obj.estimated_cost:.4f}"

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
        return super().change_view(request, object_id, form_url, extra_context)

    def summary(self, call: Call) -> dict[str, Any]:
        """The strip of key figures above the conversation."""
        status = call.get_status_display()
        if call.end_reason:
            reason = Call.EndReason(call.end_reason).label if call.end_reason in (
                Call.EndReason.values
            ) else call.end_reason
            status = f"{status} · {reason}"
        none = self.get_empty_value_display()
        items = [
            (_("status"), status, "vc-status"),
            (_("agent"), str(call.agent) if call.agent_id else none, ""),
            (_("duration"), _duration(call.duration_seconds) or none, ""),
            (_("turns"), str(call.turn_count), ""),
            (_("median latency"), self.median_latency(call) or none, ""),
            (_("tokens in / out"), f"{call.input_tokens} / {call.output_tokens}", ""),
            (_("cost"), self.cost(call), ""),
        ]
        return {"status": call.status, "items": items}

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or not (obj.error or obj.traceback):
            fieldsets = [fs for fs in fieldsets if fs[0] != _("Error")]
        return fieldsets

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


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    """Every session option of an agent, its tools, and the resulting session config."""

    list_display = (
        "name", "slug", "enabled", "is_default", "numbers", "model", "voice", "tool_count",
    )
    filter_horizontal = ("tools",)
    list_filter = ("enabled", "is_default")
    search_fields = ("name", "slug", "phone_numbers", "instructions")
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = ("effective_session_config", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "slug", ("enabled", "is_default"), "phone_numbers")}),
        (_("Model and voice"), {
            "description": _("Blank fields use the VOICECONV defaults."),
            "fields": (("model", "voice", "speed"), "instructions", "greeting"),
        }),
        (_("Turn detection"), {"fields": (
            "turn_detection_type",
            ("vad_threshold", "vad_prefix_padding_ms", "vad_silence_duration_ms"),
            ("vad_idle_timeout_ms", "vad_eagerness"),
            ("vad_create_response", "vad_interrupt_response"),
        )}),
        (_("Caller audio and transcription"), {"fields": (
            "noise_reduction",
            ("transcription_model", "transcription_language"),
            "transcription_prompt",
        )}),
        (_("Limits and reasoning"), {"fields": (
            ("reasoning_effort", "max_output_tokens"), "session_extra",
        )}),
        (_("Tools"), {"fields": ("tools",)}),
        (_("Effective session config"), {"fields": ("effective_session_config",)}),
        (_("History"), {"classes": ("collapse",), "fields": (("created_at", "updated_at"),)}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Agent]:
        return super().get_queryset(request).annotate(n_tools=Count("tools", distinct=True))

    @admin.display(description=_("numbers"))
    def numbers(self, obj: Agent) -> str | None:
        numbers = obj.number_list()
        return ", ".join(numbers) if numbers else ("(default)" if obj.is_default else None)

    @admin.display(description=_("tools"), ordering="n_tools")
    def tool_count(self, obj: Agent) -> int:
        return int(getattr(obj, "n_tools", 0) or 0)

    @admin.display(description=_("effective session config"))
    def effective_session_config(self, obj: Agent | None) -> str:
        """The ``session.update`` session the model receives for this agent, as JSON."""
        try:
            from voiceconv.realtime import build_session_config, session_model
        except ImportError as exc:
            return format_html(
                '<p class="help">The session config builder is unavailable ({}).</p>', exc
            )
        overrides = obj.session_overrides() if obj is not None and obj.pk else {}
        tools: list[dict[str, Any]] = []
        note = ""
        if obj is not None and obj.pk:
            try:
                from voiceconv.tools.binding import tools_for_agent

                tools = [bound.definition() for bound in tools_for_agent(obj).values()]
            except Exception as exc:
                logger.warning("agent %s: could not list its tools: %s", obj.pk, exc)
                note = f"Tools not shown: {exc}"
        try:
            session = build_session_config(overrides, tools)
            model = session_model(overrides)
        except Exception as exc:
            logger.warning("agent %s: could not build the session config: %s", obj, exc)
            return format_html(
                '<p class="errornote">Could not build the session config: {}</p>', exc
            )
        return format_html(
            '<p class="help">Model (connection URL): <code>{}</code>. {}'
            '{}</p><pre class="voiceconv-json" style="max-height:32rem;overflow:auto;padding:10px;'
            'border:1px solid var(--hairline-color,#ddd);border-radius:4px;font-size:12px;'
            'background:var(--darkened-bg,#f6f6f6)">{}</pre>',
            model,
            "Saved values; save to refresh." if obj is not None and obj.pk else
            "The VOICECONV defaults; save the agent to see its own config.",
            f" {note}" if note else "",
            json.dumps(session, indent=2, ensure_ascii=False, default=str),
        )
