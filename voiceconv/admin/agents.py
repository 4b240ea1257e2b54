"""Admin for agents: every session option, its tools, and the resulting session config."""

from __future__ import annotations

import json
import logging
from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from voiceconv.admin.telephony import AgentTelephonyInline
from voiceconv.clips import ClipError, clip_names, load_clip
from voiceconv.gpt_live import (
    LIVE_MODELS,
    LIVE_ONLY_FIELDS,
    REALTIME_ONLY_FIELDS,
    build_live_session,
)
from voiceconv.models import Agent, Call, TranscriptEntry
from voiceconv.realtime import build_session_config, session_model
from voiceconv.timings import TURN_FIELDS, fine_ms, p50_p90, turn_rows
from voiceconv.tools.binding import tools_for_agent

logger = logging.getLogger("voiceconv.admin")


def _set(value: Any) -> bool:
    return value not in (None, "", [], {})


class AgentAdminForm(forms.ModelForm[Agent]):
    """Checks that the agent's options are ones its speech backend has."""

    class Meta:
        model = Agent
        fields = "__all__"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "backend" in self.fields:
            self.fields["backend"].required = False  # absent: Realtime, the default
        if "opening_clip" in self.fields:
            current = self.instance.opening_clip if self.instance else ""
            names = sorted({*clip_names(), *([current] if current else [])})
            self.fields["opening_clip"].widget = forms.Select(
                choices=[("", _("(none)")), *((n, n) for n in names)])

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        backend = data.get("backend") or Agent.Backend.REALTIME
        data["backend"] = backend
        live = backend == Agent.Backend.GPT_LIVE
        model = str(data.get("model") or "")
        other = REALTIME_ONLY_FIELDS if live else LIVE_ONLY_FIELDS
        name = _("GPT-Live") if live else _("Realtime")
        for field in other:
            if field in self.fields and _set(data.get(field)):
                self.add_error(field, _("%(backend)s agents have no such option; clear it.")
                               % {"backend": name})
        if live and model and model not in LIVE_MODELS:
            self.add_error("model", _("A GPT-Live agent needs a GPT-Live model (%(models)s), "
                                      "or blank for the default.")
                           % {"models": ", ".join(LIVE_MODELS)})
        clip = str(data.get("opening_clip") or "")
        if live and clip:
            try:
                load_clip(clip)
            except ClipError as exc:
                self.add_error("opening_clip", str(exc))
        if not live and model.startswith("gpt-live"):
            self.add_error("model", _("%(model)s is a GPT-Live model: choose the GPT-Live "
                                      "backend, or a Realtime model.") % {"model": model})
        return data


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin[Agent]):
    """Every session option of an agent, its tools, and the resulting session config."""

    form = AgentAdminForm
    list_display = (
        "name", "slug", "enabled", "is_default", "backend", "numbers", "model", "voice",
        "tool_count",
    )
    filter_horizontal = ("tools",)
    inlines = [AgentTelephonyInline]
    list_filter = ("enabled", "is_default", "backend")
    search_fields = ("name", "slug", "phone_numbers", "instructions")
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = (
        "effective_session_config", "first_audio_percentiles", "created_at", "updated_at",
    )
    fieldsets = (
        (None, {"fields": (
            "name", "slug", ("enabled", "is_default"), "phone_numbers", "backend",
            "preconnect",
        )}),
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
            ("transcription_model", "transcription_language", "transcription_delay"),
            "transcription_prompt",
        )}),
        (_("Reasoning, tools and context"), {
            "description": _(
                "Reasoning and parallel tool calls need a reasoning model (the gpt-realtime-2 "
                "family); options the chosen model does not accept are refused here."
            ),
            "fields": (
                ("reasoning_effort", "greeting_reasoning_effort"),
                ("parallel_tool_calls", "max_output_tokens"),
                ("truncation", "truncation_retention_ratio",
                 "truncation_post_instructions_tokens"),
                "session_extra",
            ),
        }),
        (_("GPT-Live"), {
            "description": _("GPT-Live agents only: how tool calls are delegated, and a "
                             "recorded clip to open the call with (VOICECONV CLIPS)."),
            "fields": (("live_delegation_model", "live_acknowledgement_delay_ms"),
                       "opening_clip"),
        }),
        (_("Tools"), {"fields": ("tools",)}),
        (_("Effective session config"), {"fields": ("effective_session_config",)}),
        (_("Time to first audio"), {"fields": ("first_audio_percentiles",)}),
        (_("History"), {"classes": ("collapse",), "fields": (("created_at", "updated_at"),)}),
    )

    #: Fieldsets only one backend has (by title).
    REALTIME_SECTIONS = ("Turn detection", "Caller audio and transcription",
                         "Reasoning, tools and context")
    LIVE_SECTIONS = ("GPT-Live",)

    def get_fieldsets(self, request: HttpRequest, obj: Agent | None = None) -> Any:
        """The options of the agent's backend (both sets on a new agent, until it is saved)."""
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or not obj.pk:
            return fieldsets
        live = obj.backend == Agent.Backend.GPT_LIVE
        hidden = self.REALTIME_SECTIONS if live else self.LIVE_SECTIONS
        out = []
        for title, options in fieldsets:
            if str(title) in hidden:
                continue
            if live and title is not None and str(title) == "Model and voice":
                options = {**options, "fields": (("model", "voice"), "instructions", "greeting")}
            out.append((title, options))
        return out

    def get_queryset(self, request: HttpRequest) -> QuerySet[Agent]:
        return super().get_queryset(request).annotate(n_tools=Count("tools", distinct=True))

    @admin.display(description=_("numbers"))
    def numbers(self, obj: Agent) -> str | None:
        numbers = obj.number_list()
        return ", ".join(numbers) if numbers else ("(default)" if obj.is_default else None)

    @admin.display(description=_("tools"), ordering="n_tools")
    def tool_count(self, obj: Agent) -> int:
        return int(getattr(obj, "n_tools", 0) or 0)

    #: How many of the agent's latest calls the time-to-first-audio figures cover.
    TIMING_CALLS = 50

    @admin.display(description=_("time to first audio"))
    def first_audio_percentiles(self, obj: Agent | None) -> str:
        """p50 / p90 of each start step, and of each turn's time to first audio and its
        shares, over the agent's last :attr:`TIMING_CALLS` calls."""
        if obj is None or not obj.pk:
            return "-"
        calls = list(
            Call.objects.filter(agent=obj, stream_started_at__isnull=False)
            .order_by("-created_at")[: self.TIMING_CALLS]
        )
        if not calls:
            return str(_("No calls yet."))
        rows = []
        timings = [c.start_timings() for c in calls]
        for name, _field in Call.MILESTONES[1:]:
            values = [v for t in timings if (v := t[name]) is not None]
            if values:
                p50, p90 = p50_p90(values)
                rows.append((name.replace("_", " "), p50, p90, len(values)))
        entries = TranscriptEntry.objects.filter(
            call__in=[c.pk for c in calls], role=TranscriptEntry.Role.ASSISTANT
        ).values(*(field for _label, field in TURN_FIELDS))
        turns = [(label, fine_ms(p50), fine_ms(p90), n) for label, p50, p90, n in
                 turn_rows(entries)]
        return format_html(
            '<p class="help">Milliseconds after the webhook, over the last {} calls.</p>'
            "<table><tr><th>step</th><th>p50</th><th>p90</th><th>calls</th></tr>{}</table>"
            '<p class="help">Per turn: the caller stopped speaking (speech_stopped) → the '
            "answer's first audio sent to Twilio, and its two shares (the bridge's share "
            "counts every assistant turn, the greeting too).</p>"
            '<table class="vc-turn-timing"><tr><th>turn</th><th>p50</th><th>p90</th>'
            "<th>turns</th></tr>{}</table>",
            len(calls),
            format_html_join(
                "", "<tr><td>{}</td><td>{} ms</td><td>{} ms</td><td>{}</td></tr>", rows
            ),
            format_html_join(
                "", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", turns
            ) or format_html("<tr><td colspan=\"4\">{}</td></tr>", _("No turns measured yet.")),
        )

    @admin.display(description=_("effective session config"))
    def effective_session_config(self, obj: Agent | None) -> str:
        """The ``session.update`` session the model receives for this agent, as JSON."""
        live = obj is not None and obj.backend == Agent.Backend.GPT_LIVE
        overrides = obj.session_overrides() if obj is not None and obj.pk else {}
        if live and obj is not None:
            overrides = obj.live_overrides()
        tools: list[dict[str, Any]] = []
        note = ""
        if obj is not None and obj.pk:
            try:
                tools = [bound.definition() for bound in tools_for_agent(obj).values()]
            except Exception as exc:
                logger.warning("agent %s: could not list its tools: %s", obj.pk, exc)
                note = f"Tools not shown: {exc}"
        try:
            if live:
                session = build_live_session(overrides, tools)
                model = f"{session['model']} (GPT-Live session.start)"
            else:
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
