from __future__ import annotations

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class VoiceconvConfig(AppConfig):
    name = "voiceconv"
    verbose_name = "Voice conversations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the system checks.
        from voiceconv import checks, checks_tools, live  # noqa: F401

        # Live calls: heartbeats, the admin's live feed and metrics hang off the signals.
        live.connect()

        # Import every installed app's ``tools`` module (voiceconv's own built-ins included),
        # as the admin autodiscovers ``admin`` modules; @tool registers on import.
        autodiscover_modules("tools")
