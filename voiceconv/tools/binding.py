"""Tools bound to agents: ``ToolDefinition`` rows, synced from code, offered per agent.

A registered tool reaches the model only through a :class:`~voiceconv.models.ToolDefinition`
row (created and refreshed from code by :func:`sync_tool_definitions`, edited in the admin)
that an agent has chosen: :func:`tools_for_agent` builds the agent's
:class:`~voiceconv.tools.registry.BoundTool` set at call start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django.db import transaction

from voiceconv.models import Agent, ToolDefinition
from voiceconv.tools.registry import BoundTool, Tool, default_timeout, registry

__all__ = ["SyncReport", "bind_definition", "sync_tool_definitions", "tools_for_agent"]

logger = logging.getLogger("voiceconv.tools")


def bind_definition(definition: ToolDefinition, tool: Tool) -> BoundTool:
    """Bind a registered tool with what its ``ToolDefinition`` row says."""
    return BoundTool(
        tool=tool,
        name=tool.name,
        description=(definition.description or definition.code_description or tool.description),
        timeout=definition.timeout_seconds or tool.timeout or default_timeout(),
        holding_message=definition.holding_message or tool.holding_message,
        parameters_override=definition.parameters_override or None,
        definition_pk=definition.pk,
    )


def tools_for_agent(agent: Agent | None) -> dict[str, BoundTool]:
    """The enabled, registered tools ``agent`` offers, by name (sync: touches the DB)."""
    if agent is None:
        return {}
    bound: dict[str, BoundTool] = {}
    for definition in agent.tools.filter(enabled=True).order_by("name"):
        spec = registry.get(definition.name)
        if spec is None:
            logger.warning(
                "Tool %r of agent %r is not registered in code; not offered to the model.",
                definition.name, agent.slug,
            )
            continue
        bound[spec.name] = bind_definition(definition, spec)
    return bound


@dataclass
class SyncReport:
    """What :func:`sync_tool_definitions` did."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        def names(items: list[str]) -> str:
            return ", ".join(items) if items else "-"

        return "\n".join(
            [
                f"created: {names(self.created)}",
                f"updated: {names(self.updated)}",
                f"unchanged: {names(self.unchanged)}",
                f"not registered (orphans): {names(self.orphans)}",
            ]
        )


def sync_tool_definitions(using: str | None = None) -> SyncReport:
    """Create a ``ToolDefinition`` per registered tool and refresh generated fields.

    ``parameters`` and ``code_description`` always follow the code. ``description`` follows
    the code too unless an operator edited it (it differs from the previous code description).
    Operator fields (enabled, override, timeout, holding message) are never touched.
    """
    report = SyncReport()
    manager = ToolDefinition.objects.db_manager(using)
    with transaction.atomic(using=manager.db):
        existing = {d.name: d for d in manager.select_for_update()}
        for spec in registry.all():
            definition = existing.pop(spec.name, None)
            if definition is None:
                manager.create(
                    name=spec.name,
                    description=spec.description,
                    code_description=spec.description,
                    parameters=spec.parameters,
                )
                report.created.append(spec.name)
                continue
            changed: list[str] = []
            if definition.description in ("", definition.code_description) and (
                definition.description != spec.description
            ):
                definition.description = spec.description
                changed.append("description")
            if definition.code_description != spec.description:
                definition.code_description = spec.description
                changed.append("code_description")
            if definition.parameters != spec.parameters:
                definition.parameters = spec.parameters
                changed.append("parameters")
            if changed:
                definition.save(update_fields=[*changed, "updated_at"])
                report.updated.append(spec.name)
            else:
                report.unchanged.append(spec.name)
        report.orphans = sorted(existing)
    return report

