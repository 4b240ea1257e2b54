"""Admin for telephony: an agent's outbound, answering-machine, recording and transfer
settings (inline on the agent)."""

from __future__ import annotations

from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from voiceconv.models import AgentTelephony


class AgentTelephonyInline(admin.StackedInline):
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
