"""Admin for telephony: an agent's outbound, answering-machine, recording and transfer
settings (inline on the agent)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from voiceconv.models import Agent, AgentTelephony, Call, Recording, WarmTransfer


class AgentTelephonyInline(admin.StackedInline[AgentTelephony, Agent]):
    """``AgentAdmin.inlines``: one telephony row per agent, created when first saved."""

    model = AgentTelephony
    can_delete = False
    extra = 1
    max_num = 1
    verbose_name = _("telephony")
    verbose_name_plural = _("telephony")
    fieldsets = (
        (_("Outbound calls"), {"fields": (
            "caller_id", ("max_concurrent_outbound", "max_outbound_per_minute"),
            "greeting_wait",
        )}),
        (_("Answering machines"), {"fields": (
            "on_machine", "voicemail_mode", "voicemail_message",
        )}),
        (_("Recording"), {"fields": (("record_calls", "announce_recording"),)}),
        (_("Transfers and digits"), {"fields": ("transfer_targets",)}),
    )


class RecordingInline(admin.TabularInline[Recording, Call]):
    """``CallAdmin.inlines``: the call's recordings, with a player fetching the audio
    through the app (staff only), never from a public Twilio link."""

    model = Recording
    extra = 0
    can_delete = False
    fields = ("player", "status", "duration_seconds", "channels", "source",
              "twilio_recording_sid", "created_at")
    readonly_fields = fields
    verbose_name_plural = _("recordings")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("listen"))
    def player(self, obj: Recording) -> str:
        if not obj.url or obj.status != "completed":
            return "-"
        src = reverse("voiceconv:recording-audio", args=[obj.pk])
        return format_html('<audio controls preload="none" src="{}"></audio>', src)


class WarmTransferInline(admin.TabularInline[WarmTransfer, Call]):
    """``CallAdmin.inlines``: the call's warm transfers, each leg and its outcome."""

    model = WarmTransfer
    extra = 0
    can_delete = False
    fields = ("target", "status", "human_status", "human_call_sid", "brief", "conference",
              "created_at", "answered_at", "finished_at", "detail")
    readonly_fields = fields
    verbose_name_plural = _("warm transfers")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
