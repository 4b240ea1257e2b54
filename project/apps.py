"""The example project as an app: it ships a tool and a default agent offering it."""

from __future__ import annotations

import logging
from typing import Any

from django.apps import AppConfig, apps
from django.db import DatabaseError
from django.db.models.signals import post_migrate

logger = logging.getLogger("project")

DEFAULT_AGENT_TOOLS = ("get_time",)


def setup_example(sender: AppConfig, using: str = "default", **kwargs: Any) -> None:
    """After ``migrate``: sync tool definitions; make sure a default agent offers get_time."""
    # Imported here: this module is loaded while the app registry is being populated.
    from voiceconv.models import Agent, ToolDefinition
    from voiceconv.tools.binding import sync_tool_definitions

    try:
        report = sync_tool_definitions(using=using)
        if report.created and kwargs.get("verbosity", 1) >= 2:
            print(f"  Synced tool definitions: {', '.join(report.created)}")
        if Agent.objects.using(using).filter(is_default=True).exists():
            return
        agent, _ = Agent.objects.using(using).get_or_create(
            slug="default", defaults={"name": "Default agent", "is_default": True}
        )
        agent.tools.add(
            *ToolDefinition.objects.using(using).filter(name__in=DEFAULT_AGENT_TOOLS)
        )
    except DatabaseError as exc:  # e.g. ``migrate`` of another app before voiceconv's tables
        logger.warning("Example setup skipped: %s", exc)


class ProjectConfig(AppConfig):
    name = "project"
    verbose_name = "Example project"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # post_migrate is only sent for apps with models: listen for voiceconv's.
        post_migrate.connect(
            setup_example,
            sender=apps.get_app_config("voiceconv"),
            dispatch_uid="project.setup_example",
        )
