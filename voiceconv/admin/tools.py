"""Admin for tool definitions (editable) and tool invocations (read-only records)."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from voiceconv import formatting
from voiceconv.models import Call, ToolDefinition, ToolInvocation
from voiceconv.tools.binding import SyncReport, sync_tool_definitions
from voiceconv.tools.registry import DEFAULT_TIMEOUT

SYNC_ACTION = "sync_from_code"


def _report_message(report: SyncReport) -> str:
    parts = [
        f"{len(report.created)} created",
        f"{len(report.updated)} updated",
        f"{len(report.unchanged)} unchanged",
    ]
    text = "Tool definitions synced from code: " + ", ".join(parts) + "."
    if report.orphans:
        text += " Not registered in code (never offered): " + ", ".join(report.orphans) + "."
    return text


def _pretty_json(value: Any) -> str:
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, ensure_ascii=False))


@admin.register(ToolDefinition)
class ToolDefinitionAdmin(admin.ModelAdmin[ToolDefinition]):
    list_display = [
        "name", "enabled", "registered", "effective_timeout", "agent_count", "updated_at",
    ]
    list_filter = ["enabled"]
    search_fields = ["name", "description"]
    actions = [SYNC_ACTION]
    readonly_fields = [
        "registered_status", "code_description", "generated_parameters", "code_defaults",
        "created_at", "updated_at",
    ]
    fieldsets = [
        (None, {"fields": ["name", "registered_status", "enabled"]}),
        (_("What the model sees"), {
            "fields": ["description", "code_description", "parameters_override",
                       "generated_parameters"],
        }),
        (_("Running"), {"fields": ["timeout_seconds", "holding_message", "code_defaults"]}),
        (None, {"fields": ["created_at", "updated_at"]}),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ToolDefinition]:
        return super().get_queryset(request).annotate(_agent_count=Count("agents"))

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fields = list(super().get_readonly_fields(request, obj))
        return [*fields, "name"] if obj is not None else fields

    @admin.display(boolean=True, description=_("registered"))
    def registered(self, obj: ToolDefinition) -> bool:
        return obj.is_registered

    @admin.display(description=_("function"))
    def registered_status(self, obj: ToolDefinition) -> str:
        if not obj.pk:
            return "-"
        spec = obj.registered_tool
        if spec is None:
            return format_html(
                '<strong style="color:#ba2121">{}</strong>',
                _("Not registered: no @tool function has this name, so it is never offered."),
            )
        return format_html("<code>{}</code>", spec.location)

    @admin.display(description=_("timeout (s)"))
    def effective_timeout(self, obj: ToolDefinition) -> str:
        if obj.timeout_seconds:
            return f"{obj.timeout_seconds:g}"
        spec = obj.registered_tool
        value = spec.timeout if spec and spec.timeout else DEFAULT_TIMEOUT
        return f"{value:g} (default)"

    @admin.display(description=_("agents"), ordering="_agent_count")
    def agent_count(self, obj: ToolDefinition) -> int:
        return getattr(obj, "_agent_count", 0)

    @admin.display(description=_("generated parameters"))
    def generated_parameters(self, obj: ToolDefinition) -> str:
        return _pretty_json(obj.parameters or {})

    @admin.display(description=_("code defaults"))
    def code_defaults(self, obj: ToolDefinition) -> str:
        spec = obj.registered_tool
        if spec is None:
            return "-"
        timeout = spec.timeout or DEFAULT_TIMEOUT
        holding = spec.holding_message or "(none)"
        return f"timeout {timeout:g} s; holding message: {holding}"

    @admin.action(description=_("Sync tool definitions from code"))
    def sync_from_code(self, request: HttpRequest, queryset: QuerySet[ToolDefinition]) -> None:
        """Sync every definition (the selection does not matter)."""
        report = sync_tool_definitions()
        level = messages.WARNING if report.orphans else messages.SUCCESS
        self.message_user(request, _report_message(report), level)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # The sync action concerns all definitions: allow it with nothing selected.
        if (
            request.method == "POST"
            and request.POST.get("action") == SYNC_ACTION
            and not request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
            and self.has_change_permission(request)
        ):
            self.sync_from_code(request, self.get_queryset(request).none())
            return HttpResponseRedirect(request.get_full_path())
        extra_context = {"sync_action": SYNC_ACTION, **(extra_context or {})}
        return super().changelist_view(request, extra_context)


class ErrorFilter(admin.SimpleListFilter):
    title = _("outcome")
    parameter_name = "outcome"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [("ok", _("ok")), ("error", _("error"))]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[ToolInvocation]
    ) -> QuerySet[ToolInvocation]:
        if self.value() == "ok":
            return queryset.filter(error="")
        if self.value() == "error":
            return queryset.exclude(error="")
        return queryset


class _ReadOnlyMixin:
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


INVOCATION_FIELDS = (
    "call", "tool_name", "openai_call_id", "started_at", "duration_ms", "arguments", "output",
    "error", "traceback",
)


@admin.register(ToolInvocation)
class ToolInvocationAdmin(_ReadOnlyMixin, admin.ModelAdmin[ToolInvocation]):
    list_display = ["started_at", "tool_name", "call", "duration_ms", "succeeded", "openai_call_id"]
    list_filter = [ErrorFilter, "tool_name", "started_at"]
    search_fields = ["openai_call_id", "tool_name", "call__twilio_call_sid"]
    list_select_related = ["call"]
    ordering = ["-started_at", "-pk"]
    date_hierarchy = "started_at"
    fields = INVOCATION_FIELDS
    readonly_fields = INVOCATION_FIELDS

    @admin.display(boolean=True, description=_("ok"))
    def succeeded(self, obj: ToolInvocation) -> bool:
        return obj.ok


class ToolInvocationInline(_ReadOnlyMixin, admin.TabularInline[ToolInvocation, Call]):
    """Tool invocations on the call's admin page (``CallAdmin.inlines``): when each was called
    (since the call began), its arguments, outcome and duration; the name opens the record."""

    model = ToolInvocation
    template = "voiceconv/tool_invocations_inline.html"
    extra = 0
    can_delete = False
    fields = ("called", "tool", "arguments", "output", "error", "duration")
    readonly_fields = fields
    ordering = ["started_at", "pk"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ToolInvocation]:
        return super().get_queryset(request).select_related("call")

    @admin.display(description=_("called"))
    def called(self, obj: ToolInvocation) -> str:
        call = obj.call
        start = (call.webhook_received_at or call.stream_started_at) if call else None
        return formatting.relative(obj.started_at, start) or formatting.timestamp(obj.started_at)

    @admin.display(description=_("tool"))
    def tool(self, obj: ToolInvocation) -> str:
        url = reverse("admin:voiceconv_toolinvocation_change", args=[obj.pk])
        return format_html('<a href="{}">{}</a> <small>{}</small>', url, obj.tool_name,
                           obj.openai_call_id)

    @admin.display(description=_("duration"))
    def duration(self, obj: ToolInvocation) -> str:
        return formatting.milliseconds(obj.duration_ms)
