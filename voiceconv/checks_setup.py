"""System checks that a project is set up to take calls.

| id | when |
| --- | --- |
| ``voiceconv.W005`` | no enabled default agent (with ``--database``) |
| ``voiceconv.W012`` | a module of a project app has ``@tool`` functions, never imported |
| ``voiceconv.W020`` | deploy: no OpenAI API key (every call would end in the apology) |
| ``voiceconv.W021`` | deploy: ``PUBLIC_URL`` empty while signatures are checked |
| ``voiceconv.W022`` | deploy: SQLite while ``DEBUG`` is off |
| ``voiceconv.W023`` | deploy: the in-memory channel layer while ``DEBUG`` is off |
| ``voiceconv.W024`` | Redis client socket timeout not longer than the layer's blocking pop |
"""

from __future__ import annotations

import os
import re
import sys
import sysconfig
from pathlib import Path
from typing import Any

from channels.layers import get_channel_layer
from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage, Tags, Warning, register
from django.db import DatabaseError

from voiceconv.conf import voiceconv_settings
from voiceconv.layers import redis_timeout_problem

_TOOL_DECORATOR = re.compile(r"^\s*@(?:voiceconv\.)?tool\b", re.M)
_SKIP_DIRS = {"migrations", "__pycache__", "node_modules", "static", "templates", ".git"}
_MAX_FILES = 2000


@register(Tags.database)
def check_default_agent(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """A call to a number no agent lists goes to the default agent: there should be one."""
    if not databases:
        return []
    # Imported here, not at the top: the models need Django's app registry, and this module is
    # importable before it is ready.
    from voiceconv.models import Agent

    messages: list[CheckMessage] = []
    for alias in databases:
        try:
            has_default = Agent.objects.using(alias).filter(enabled=True, is_default=True).exists()
        except DatabaseError:
            continue  # not migrated yet
        if not has_default:
            messages.append(
                Warning(
                    f"No enabled default agent in database {alias!r}: calls to numbers no "
                    "agent lists run on the VOICECONV defaults with no tools.",
                    hint="Mark an agent as the default in the admin (Agents), or delete every "
                    "agent and run migrate, which creates one.",
                    id="voiceconv.W005",
                )
            )
    return messages


def _project_apps() -> list[tuple[str, Path]]:
    """Installed apps that live in the project (not in an installed distribution)."""
    installed = {Path(p).resolve() for p in {sysconfig.get_paths()["purelib"],
                                             sysconfig.get_paths()["platlib"]}}
    out = []
    for config in apps.get_app_configs():
        path = Path(config.path).resolve()
        if any(root == path or root in path.parents for root in installed):
            continue
        out.append((config.name, path))
    return out


def unimported_tool_modules() -> list[tuple[str, Path]]:
    """Modules of project apps that contain ``@tool`` but were never imported."""
    found: list[tuple[str, Path]] = []
    seen = 0
    for app_name, root in _project_apps():
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(".")]
            rel = Path(dirpath).relative_to(root)
            if any(part.startswith("test") for part in rel.parts):
                continue
            for filename in filenames:
                if not filename.endswith(".py") or filename.startswith("test"):
                    continue
                seen += 1
                if seen > _MAX_FILES:
                    return found
                path = Path(dirpath) / filename
                parts = [*rel.parts, filename[:-3]]
                if parts[-1] == "__init__":
                    parts.pop()
                module = ".".join([app_name, *parts])
                if module in sys.modules:
                    continue
                try:
                    text = path.read_text(encoding="utf-8", errors="replace")
                except OSError:
                    continue
                if "tool" in text and _TOOL_DECORATOR.search(text):
                    found.append((module, path))
    return found


@register()
def check_unimported_tools(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``@tool`` registers on import: a tool in a module nothing imports is never offered."""
    return [
        Warning(
            f"{module} ({path}) declares @tool functions but is never imported, so they are "
            "not registered and never offered.",
            hint="voiceconv imports each installed app's tools module: move them to "
            "<app>/tools.py, or import the module from there (or from your AppConfig.ready()).",
            id="voiceconv.W012",
        )
        for module, path in unimported_tool_modules()
    ]


@register(Tags.security, deploy=True)
def check_deployment(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``manage.py check --deploy``: what would make calls fail or not scale in production."""
    messages: list[CheckMessage] = []
    has_key = bool(os.environ.get("OPENAI_API_KEY") or getattr(settings, "OPENAI_API_KEY", ""))
    if not has_key and voiceconv_settings.OPENAI_CLIENT_FACTORY is None:
        messages.append(
            Warning(
                "No OpenAI API key: every call would end in the apology.",
                hint="Set the OPENAI_API_KEY environment variable or setting (or "
                "VOICECONV['OPENAI_CLIENT_FACTORY']).",
                id="voiceconv.W020",
            )
        )
    if voiceconv_settings.VALIDATE_TWILIO_SIGNATURE and not str(
        voiceconv_settings.PUBLIC_URL or ""
    ).strip():
        messages.append(
            Warning(
                "VOICECONV['PUBLIC_URL'] is empty while Twilio signatures are checked: the "
                "signed URL is rebuilt from each request, which breaks behind a proxy that "
                "does not forward X-Forwarded-Proto/-Host.",
                hint='Set VOICECONV["PUBLIC_URL"] to the origin Twilio calls, e.g. '
                '"https://voice.example.com".',
                id="voiceconv.W021",
            )
        )
    if not settings.DEBUG:
        engines = {db.get("ENGINE", "") for db in settings.DATABASES.values()}
        if any(engine.endswith("sqlite3") for engine in engines):
            messages.append(
                Warning(
                    "SQLite with DEBUG off: call records from several processes wait on one "
                    "file lock.",
                    hint="Use PostgreSQL in production (DATABASE_URL in the example project).",
                    id="voiceconv.W022",
                )
            )
        layers = getattr(settings, "CHANNEL_LAYERS", {}) or {}
        backend = str((layers.get("default") or {}).get("BACKEND", ""))
        if not layers or backend.endswith("InMemoryChannelLayer"):
            messages.append(
                Warning(
                    "The in-memory channel layer with DEBUG off: hang-ups and other control "
                    "messages never reach a call held by another process.",
                    hint="Use channels_redis (REDIS_URL in the example project).",
                    id="voiceconv.W023",
                )
            )
    return messages


@register()
def check_channel_layer(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """A channels_redis layer whose idle receives all time out (see voiceconv.layers)."""
    layers = getattr(settings, "CHANNEL_LAYERS", {}) or {}
    if "redis" not in str((layers.get("default") or {}).get("BACKEND", "")).lower():
        return []
    try:
        problem = redis_timeout_problem(get_channel_layer())
    except Exception:  # a layer that cannot even be built is reported when it is used
        return []
    if problem is None:
        return []
    return [Warning(f"Channel layer: {problem}.", id="voiceconv.W024")]
