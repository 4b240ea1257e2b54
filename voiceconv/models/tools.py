"""Tool definitions (what the model is offered) and tool invocations (what happened).

A :class:`ToolDefinition` binds a function registered with ``@tool`` to what the model sees:
its description, parameter schema, timeout and holding line. Definitions are created and
refreshed from code by :func:`voiceconv.tools.binding.sync_tool_definitions` (admin action,
management command ``voiceconv_sync_tools``); agents choose theirs in the admin. A definition
whose function no longer exists is an orphan: flagged, and never offered to the model.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

from voiceconv.tools.registry import Tool, registry
from voiceconv.tools.schema import validate_parameters_schema


class ToolDefinition(models.Model):
    """A registered tool as the model is offered it. Blank fields use the code's values."""

    name = models.CharField(
        _("name"),
        max_length=64,
        unique=True,
        validators=[
            RegexValidator(r"^[a-zA-Z0-9_-]{1,64}$", _("Letters, digits, _ and - only."))
        ],
        help_text=_("The name of a function registered with @tool."),
    )
    description = models.TextField(
        _("description"),
        blank=True,
        help_text=_(
            "What the model is told about the tool: when to use it, what to say. "
            "Defaults to the docstring; blank uses the docstring."
        ),
    )
    code_description = models.TextField(
        _("description in code"), blank=True, editable=False,
        help_text=_("The docstring's description at the last sync."),
    )
    parameters = models.JSONField(
        _("parameters"), default=dict, blank=True, editable=False,
        help_text=_("JSON schema generated from the function's signature at the last sync."),
    )
    parameters_override = models.JSONField(
        _("parameters override"),
        null=True,
        blank=True,
        help_text=_(
            'A JSON schema ({"type": "object", "properties": ...}) offered instead of the '
            "generated one, e.g. to reword parameter descriptions or restrict values with "
            '"enum". Arguments are checked against it too.'
        ),
    )
    enabled = models.BooleanField(
        _("enabled"), default=True, help_text=_("Disabled tools are offered to no agent.")
    )
    timeout_seconds = models.FloatField(
        _("timeout (s)"),
        null=True,
        blank=True,
        validators=[MinValueValidator(0.1)],
        help_text=_("Blank uses the tool's own timeout (10 s unless the code says otherwise)."),
    )
    holding_message = models.TextField(
        _("holding message"),
        blank=True,
        help_text=_(
            "What the agent says while a slow tool runs. Blank uses the code's, if any."
        ),
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("tool definition")
        verbose_name_plural = _("tool definitions")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def registered_tool(self) -> Tool | None:
        """The ``@tool`` function behind this definition, if it is registered."""
        return registry.get(self.name)

    @property
    def is_registered(self) -> bool:
        """False for orphans: definitions whose function no longer exists."""
        return self.registered_tool is not None

    @property
    def effective_description(self) -> str:
        spec = self.registered_tool
        return self.description or self.code_description or (spec.description if spec else "")

    def clean(self) -> None:
        super().clean()
        spec = self.registered_tool
        if self._state.adding and spec is None:
            raise ValidationError(
                {"name": _("No tool named %(name)s is registered with @tool.")
                 % {"name": self.name}}
            )
        if self.parameters_override in (None, {}, ""):
            self.parameters_override = None
            return
        problems = validate_parameters_schema(self.parameters_override, spec)
        if problems:
            raise ValidationError({"parameters_override": problems})


class ToolInvocation(models.Model):
    """One function call the model made during a call, with its outcome. Write-once."""

    call = models.ForeignKey(
        "voiceconv.Call",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="tool_invocations",
        verbose_name=_("call"),
    )
    tool_name = models.CharField(_("tool"), max_length=100)
    openai_call_id = models.CharField(_("OpenAI call id"), max_length=100, blank=True)
    arguments = models.TextField(_("arguments"), blank=True, help_text=_("As the model sent them."))
    output = models.TextField(_("output"), blank=True, help_text=_("As sent to the model."))
    error = models.TextField(_("error"), blank=True)
    traceback = models.TextField(_("traceback"), blank=True)
    started_at = models.DateTimeField(_("started"))
    duration_ms = models.PositiveIntegerField(_("duration (ms)"), default=0)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("tool invocation")
        verbose_name_plural = _("tool invocations")
        ordering = ["started_at", "pk"]
        indexes = [
            models.Index(fields=["call", "started_at"], name="voiceconv_toolinv_call_idx"),
            models.Index(fields=["tool_name", "started_at"], name="voiceconv_toolinv_tool_idx"),
            models.Index(fields=["openai_call_id"], name="voiceconv_toolinv_oaid_idx"),
        ]

    def __str__(self) -> str:
        outcome = "error" if self.error else "ok"
        return f"{self.tool_name} ({outcome}, {self.duration_ms} ms)"

    @property
    def ok(self) -> bool:
        return not self.error

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.duration_ms = max(0, int(self.duration_ms or 0))
        super().save(*args, **kwargs)
