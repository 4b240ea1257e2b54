"""voiceconv's app config: checks, tool discovery, and what ``migrate`` sets up."""

from __future__ import annotations

import logging
from typing import Any

from django.apps import AppConfig
from django.db import DatabaseError
from django.db.models.signals import post_migrate
from django.utils.module_loading import autodiscover_modules

from voiceconv.tools.registry import registry

logger = logging.getLogger("voiceconv.setup")

DEFAULT_AGENT_SLUG = "default"


def project_tool_names() -> list[str]:
    """Registered tools that the project wrote (not voiceconv's built-in call control)."""
    return sorted(
        t.name for t in registry.all() if not getattr(t.func, "__module__", "").startswith(
            "voiceconv."
        )
    )


def setup_after_migrate(
    sender: AppConfig, using: str = "default", verbosity: int = 1, **kwargs: Any
) -> None:
    """After ``migrate``: sync tool definitions from code, and when the project has no agent
    at all, create a default one offering the project's own tools.

    The built-in ``end_call`` and ``transfer_call`` are not offered by default (an unrestricted
    transfer lets the model dial any number): add them to the agent in the admin.
    """
    # Models are imported here, not at module level: this module is loaded with the app
    # registry, before models may be imported.
    from voiceconv.models import Agent, ToolDefinition
    from voiceconv.tools.binding import sync_tool_definitions

    try:
        report = sync_tool_definitions(using=using)
        if report.created and verbosity >= 1:
            print(f"  Tool definitions created from code: {', '.join(report.created)}")
        if Agent.objects.using(using).exists():
            return
        agent = Agent.objects.db_manager(using).create(
            name="Default agent", slug=DEFAULT_AGENT_SLUG, is_default=True
        )
        tools = ToolDefinition.objects.using(using).filter(name__in=project_tool_names())
        agent.tools.add(*tools)
        if verbosity >= 1:
            offered = ", ".join(sorted(t.name for t in tools)) or "no tools"
            print(f"  Created the default agent (offering {offered}); edit it in the admin.")
    except DatabaseError as exc:  # e.g. a migration run that stops before voiceconv's tables
        logger.warning("voiceconv set-up after migrate skipped: %s", exc)


class VoiceconvConfig(AppConfig):
    name = "voiceconv"
    verbose_name = "Voice conversations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the system checks.
        from voiceconv import checks, checks_setup, checks_tools, live  # noqa: F401

        # Live calls: heartbeats, the admin's live feed and metrics hang off the signals.
        live.connect()

        # Import every installed app's ``tools`` module (voiceconv's own built-ins included),
        # as the admin autodiscovers ``admin`` modules; @tool registers on import.
        autodiscover_modules("tools")
        post_migrate.connect(
            setup_after_migrate, sender=self, dispatch_uid="voiceconv.setup_after_migrate"
        )
