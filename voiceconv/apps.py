from __future__ import annotations

from django.apps import AppConfig


class VoiceconvConfig(AppConfig):
    name = "voiceconv"
    verbose_name = "Voice conversations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from voiceconv import checks  # noqa: F401  (registers system checks)
