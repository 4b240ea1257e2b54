"""The example project's home page: what this server is and how to hook it up."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from django.views.generic import TemplateView

from voiceconv.onboarding import credentials, twilio_console_urls


class HomeView(TemplateView):
    """``/``: the Twilio console URLs for this server, the credentials' state, the admin."""

    template_name = "home.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["urls"] = twilio_console_urls(self.request)
        context["credentials"] = credentials()
        context["admin_links"] = [
            ("Agents", reverse("admin:voiceconv_agent_changelist"),
             "who answers, with which voice, instructions and tools"),
            ("Calls", reverse("admin:voiceconv_call_changelist"),
             "every call: the conversation, what was heard, timings, cost"),
            ("Tool definitions", reverse("admin:voiceconv_tooldefinition_changelist"),
             "the @tool functions the agents may use"),
        ]
        return context
