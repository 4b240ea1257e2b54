"""The example project as an app: it ships a tool (``project/tools.py``).

voiceconv itself syncs tool definitions after ``migrate`` and creates a default agent offering
the project's tools, so the example needs no set-up code of its own.
"""

from __future__ import annotations

from django.apps import AppConfig


class ProjectConfig(AppConfig):
    name = "project"
    verbose_name = "Example project"
    default_auto_field = "django.db.models.BigAutoField"
