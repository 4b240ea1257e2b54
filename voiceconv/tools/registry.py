"""Declaring tools: :class:`Tool`, the ``@tool`` decorator and the process-wide registry.

A tool is a plain function (sync or async)::

    from voiceconv import tool

    @tool
    def lookup_order(order_id: str) -> dict:
        '''Look up an order.

        Args:
            order_id: The order number the caller reads out.
        '''
        return {"status": "shipped"}

The name comes from the function, the description and per-parameter descriptions from the
docstring (Google, reST or numpydoc), and the JSON schema of the parameters from the signature
(:mod:`voiceconv.tools.schema`). Parameters named ``state``, ``connection``, ``call`` and
``control`` are not part of the schema: the runtime passes them when the function asks for them.
A bad registration (duplicate name, unsupported parameter) fails at import, naming the function.

:class:`BoundTool` is a tool as one agent offers it (description, schema override, timeout);
:mod:`voiceconv.tools.binding` builds them from ``ToolDefinition`` rows. This module imports no
models, so ``voiceconv.models`` can import it at module level.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, overload

from voiceconv.conf import voiceconv_settings
from voiceconv.exceptions import ToolDeclarationError
from voiceconv.tools.schema import (
    Arguments,
    arguments_model,
    describe,
    json_schema,
    location,
    parse_arguments,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "BoundTool",
    "Tool",
    "ToolRegistry",
    "default_timeout",
    "registry",
    "tool",
]

#: Seconds a tool may run when neither its definition, its decorator nor the settings say.
DEFAULT_TIMEOUT = 10.0
#: Function names the Realtime API accepts.
TOOL_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def default_timeout() -> float:
    """``VOICECONV["TOOL_TIMEOUT"]`` when positive, else :data:`DEFAULT_TIMEOUT`."""
    value = voiceconv_settings.timeouts.tool
    return value if value > 0 else DEFAULT_TIMEOUT


@dataclass(frozen=True, eq=False)
class Tool:
    """A registered tool function and what was derived from it."""

    name: str
    description: str
    func: Callable[..., Any]
    parameters: dict[str, Any]
    arguments: Arguments
    is_async: bool
    location: str
    timeout: float | None = None
    holding_message: str = ""

    @classmethod
    def from_function(
        cls,
        func: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = None,
        holding_message: str = "",
    ) -> Tool:
        """Derive a tool from ``func``; raises ``ToolDeclarationError`` naming it."""
        where = location(func)
        if not callable(func):
            raise TypeError(f"@tool needs a function, got {func!r}")
        target = inspect.unwrap(func)
        if inspect.isasyncgenfunction(target) or inspect.isgeneratorfunction(target):
            raise ToolDeclarationError(f"@tool {where}: generators cannot be tools")
        tool_name = str(name or getattr(func, "__name__", ""))
        if not TOOL_NAME_RE.match(tool_name):
            raise ToolDeclarationError(
                f"@tool {where}: name {tool_name!r} must be 1-64 letters, digits, _ or -"
            )
        if timeout is not None and not timeout > 0:
            raise ToolDeclarationError(f"@tool {where}: timeout must be > 0, got {timeout!r}")
        doc_description, param_docs = describe(func)
        args = arguments_model(func, where, param_docs)
        is_async = inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
            getattr(target, "__call__", None)  # noqa: B004
        )
        return cls(
            name=tool_name,
            description=(description if description is not None else doc_description).strip(),
            func=func,
            parameters=json_schema(args.model, where),
            arguments=args,
            is_async=is_async,
            location=where,
            timeout=timeout,
            holding_message=holding_message or "",
        )

    def validate(self, arguments: str, override: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Parse and validate the model's JSON arguments into keyword arguments."""
        return parse_arguments(arguments, self.arguments, override)

    def bind(
        self,
        *,
        description: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        holding_message: str | None = None,
    ) -> BoundTool:
        """This tool as offered to the model, with optional overrides."""
        return BoundTool(
            tool=self,
            name=self.name,
            description=description or self.description,
            parameters_override=dict(parameters) if parameters else None,
            timeout=timeout or self.timeout or default_timeout(),
            holding_message=holding_message or self.holding_message,
        )


@dataclass(frozen=True, eq=False)
class BoundTool:
    """A tool as one agent offers it: the function plus its definition's settings."""

    tool: Tool
    name: str
    description: str
    timeout: float
    holding_message: str = ""
    parameters_override: dict[str, Any] | None = None
    definition_pk: int | None = None

    @property
    def parameters(self) -> dict[str, Any]:
        return self.parameters_override or self.tool.parameters

    def definition(self) -> dict[str, Any]:
        """The entry for the GA session's ``tools`` list."""
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
        }

    def validate(self, arguments: str) -> dict[str, Any]:
        return self.tool.validate(arguments, self.parameters_override)


class ToolRegistry:
    """Tools by name. One module-level instance, :data:`registry`."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    def register(self, tool: Tool) -> Tool:
        """Add ``tool``; a different function under the same name is an error naming both."""
        existing = self._tools.get(tool.name)
        if existing is not None and existing.location != tool.location:
            raise ToolDeclarationError(
                f"Duplicate tool name {tool.name!r}: {existing.location} and {tool.location}. "
                "Pass @tool(name=...) to one of them."
            )
        self._tools[tool.name] = tool  # same location: a re-import replaces it
        return tool

    def unregister(self, name: str) -> None:
        self._tools.pop(name, None)

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def all(self) -> list[Tool]:
        """Every registered tool, by name."""
        return [self._tools[n] for n in sorted(self._tools)]

    def clear(self) -> None:
        self._tools.clear()

    @contextmanager
    def isolated(self) -> Iterator[ToolRegistry]:
        """Restore the registry's contents on exit (for tests)."""
        saved = dict(self._tools)
        try:
            yield self
        finally:
            self._tools = saved

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)


registry: ToolRegistry = ToolRegistry()

F = typing.TypeVar("F", bound=Callable[..., Any])


@overload
def tool(func: F, /) -> F: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    holding_message: str = "",
) -> Callable[[F], F]: ...


def tool(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    holding_message: str = "",
) -> Any:
    """Register a function as a tool; usable bare (``@tool``) or with options.

    ``timeout`` is in seconds (default 10); ``holding_message`` is what the agent says when the
    tool is slow. The function is returned unchanged (its :class:`Tool` is ``__voiceconv_tool__``).
    """

    def decorate(f: F) -> F:
        spec = Tool.from_function(
            f, name=name, description=description, timeout=timeout,
            holding_message=holding_message,
        )
        registry.register(spec)
        # A marker on the function itself, which declares no such attribute.
        f.__voiceconv_tool__ = spec  # type: ignore[attr-defined]
        return f

    if func is not None:
        return decorate(func)
    return decorate

