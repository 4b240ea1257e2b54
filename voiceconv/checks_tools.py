"""System checks for tools (``voiceconv.W010``, ``voiceconv.W011``).

They read the database, so they skip quietly while it is unreachable or not migrated yet
(checks run before ``migrate``).
"""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Warning, register
from django.db import DatabaseError

from voiceconv.tools.registry import registry
from voiceconv.tools.schema import validate_parameters_schema


@register()
def check_tool_definitions(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """Orphaned definitions (no ``@tool`` function) and unusable parameter overrides."""
    if app_configs is not None and not any(c.name == "voiceconv" for c in app_configs):
        return []
    # Imported here, not at the top: the models need Django's app registry, and this module is
    # importable before it is ready.
    from voiceconv.models import ToolDefinition

    try:
        definitions = list(
            ToolDefinition.objects.only("name", "parameters_override").order_by("name")
        )
    except DatabaseError:
        return []
    messages: list[CheckMessage] = []
    for definition in definitions:
        spec = registry.get(definition.name)
        if spec is None:
            messages.append(
                Warning(
                    f"Tool definition {definition.name!r} has no registered @tool function; "
                    "it is never offered to the model.",
                    hint="Restore the function (in an installed app's tools module), or "
                    "delete the definition in the admin.",
                    obj=definition,
                    id="voiceconv.W010",
                )
            )
        if definition.parameters_override:
            problems = validate_parameters_schema(definition.parameters_override, spec)
            if problems:
                messages.append(
                    Warning(
                        f"Tool definition {definition.name!r} has an unusable parameters "
                        f"override: {' '.join(problems)}",
                        hint="Fix or clear the override in the admin.",
                        obj=definition,
                        id="voiceconv.W011",
                    )
                )
    return messages
