"""System checks for voiceconv (``voiceconv.E00x`` / ``voiceconv.W00x``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register

from voiceconv.conf import DEFAULTS


@register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    errors: list[Error] = []
    user = getattr(settings, "VOICECONV", {}) or {}
    if not isinstance(user, dict):
        return [Error("VOICECONV must be a dict.", id="voiceconv.E001")]
    for key in sorted(set(user) - set(DEFAULTS)):
        errors.append(
            Error(
                f"Unknown VOICECONV setting {key!r}.",
                hint="See the settings table in voiceconv's README.",
                id="voiceconv.E002",
            )
        )
    return errors
