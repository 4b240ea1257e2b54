"""Tools the agent can call: ``@tool``, the registry, schemas, execution, call control.

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
(through pydantic). Parameters named ``state``, ``connection``, ``call`` and ``control`` are not
part of the schema: the runtime passes them when the function asks for them (a function with
``**kwargs`` receives all of them).

Installed apps' ``tools`` modules are imported by ``VoiceconvConfig.ready()``; a
:class:`~voiceconv.models.ToolDefinition` row (synced from code, edited in the admin) then
decides whether and how an agent offers the tool to the model.

This module never imports models at import time.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import inspect
import json
import logging
import re
import time
import traceback as traceback_module
import typing
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, overload

import docstring_parser
import pydantic
import pydantic_core
from django.core.exceptions import ImproperlyConfigured
from django.db import close_old_connections
from django.utils import timezone
from pydantic.fields import FieldInfo

from voiceconv.call import ToolCall
from voiceconv.events import CallInfo

if TYPE_CHECKING:
    from voiceconv.models import Agent, ToolDefinition

__all__ = [
    "DEFAULT_TIMEOUT",
    "INJECTED_PARAMETERS",
    "BoundTool",
    "CallControl",
    "SyncReport",
    "Tool",
    "ToolArgumentsError",
    "ToolCall",
    "ToolContext",
    "ToolRegistry",
    "ToolResult",
    "bind_definition",
    "end_call",
    "execute_tool_call",
    "registry",
    "serialize_result",
    "sync_tool_definitions",
    "tool",
    "tools_for_agent",
    "transfer_call",
    "validate_parameters_schema",
]

logger = logging.getLogger("voiceconv.tools")

#: Seconds a tool may run when neither its definition nor its decorator says otherwise.
DEFAULT_TIMEOUT = 10.0
#: Parameter names the runtime fills in; never part of a tool's schema.
INJECTED_PARAMETERS = frozenset({"state", "connection", "call", "control"})
#: Function names the Realtime API accepts.
TOOL_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
#: Sync tools run here, so a stuck tool cannot starve the loop's default executor (DNS etc.).
MAX_TOOL_THREADS = 64
#: Longest error text sent to the model (the full text is kept on the invocation).
MAX_MODEL_ERROR_CHARS = 500

_executor: ThreadPoolExecutor | None = None


# --- records ------------------------------------------------------------------------------


class CallControl(Protocol):
    """What a tool may do to the live call; implemented by the consumer."""

    def end_call(self, reason: str = "agent_ended") -> None: ...

    def transfer_call(self, target: str) -> None: ...


@dataclass(slots=True)
class ToolContext:
    """The per-call values injected into tools that ask for them."""

    state: dict[str, Any] = field(default_factory=dict)
    connection: Any = None
    call: CallInfo | None = None
    control: CallControl | None = None

    def injectables(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "connection": self.connection,
            "call": self.call,
            "control": self.control,
        }


@dataclass(slots=True)
class ToolResult:
    """The outcome of one tool call: ``output`` goes to the model, the rest to the record."""

    call_id: str
    name: str
    arguments: str
    output: str
    started_at: datetime
    duration_ms: int
    error: str = ""
    traceback: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    def as_model_fields(self) -> dict[str, Any]:
        """Keyword arguments for ``ToolInvocation.objects.create(call=..., **fields)``."""
        return {
            "tool_name": self.name[:100],
            "openai_call_id": self.call_id[:100],
            "arguments": self.arguments,
            "output": self.output,
            "error": self.error,
            "traceback": self.traceback,
            "started_at": self.started_at,
            "duration_ms": self.duration_ms,
        }


class ToolArgumentsError(ValueError):
    """The model's arguments do not fit the tool's schema."""


# --- schema -------------------------------------------------------------------------------


def _location(func: Callable[..., Any]) -> str:
    module = getattr(func, "__module__", None) or "?"
    qualname = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
    return f"{module}:{qualname}"


_WRAPPED_LINE_RE = re.compile(r"(?<=\S)[ \t]*\n[ \t]*(?=[^\s\-*\d])")


def _unwrap(text: str) -> str:
    """Join lines wrapped inside a paragraph; keep blank lines and list items."""
    return _WRAPPED_LINE_RE.sub(" ", text.strip())


def _docstring(func: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    doc = inspect.getdoc(func) or ""
    if not doc:
        return "", {}
    parsed = docstring_parser.parse(doc)
    parts = [_unwrap(p) for p in (parsed.short_description, parsed.long_description) if p]
    params = {p.arg_name: _unwrap(p.description) for p in parsed.params if p.description}
    return "\n\n".join(parts), params


def _has_description(annotation: Any) -> bool:
    if typing.get_origin(annotation) is typing.Annotated:
        return any(
            isinstance(m, FieldInfo) and m.description for m in annotation.__metadata__
        )
    return False


_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_VALUES = ("items", "additionalProperties", "not", "contains")


def _walk(node: Any, fn: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``fn`` to every sub-schema (not to ``properties`` mappings themselves)."""
    if not isinstance(node, dict):
        return
    fn(node)
    for key in ("properties", "$defs"):
        for sub in (node.get(key) or {}).values():
            _walk(sub, fn)
    for key in _SCHEMA_LISTS:
        for sub in node.get(key) or ():
            _walk(sub, fn)
    for key in _SCHEMA_VALUES:
        _walk(node.get(key), fn)


def _tidy_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Make pydantic's JSON schema compact for the model: inline ``$defs``, drop titles."""
    defs: dict[str, Any] = schema.pop("$defs", {})
    recursive: set[str] = set()

    def inline(node: Any, stack: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [inline(x, stack) for x in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref.removeprefix("#/$defs/")
            if name in stack or name not in defs:
                recursive.add(name)
                return node
            target = inline(defs[name], (*stack, name))
            rest = {k: inline(v, stack) for k, v in node.items() if k != "$ref"}
            return {**target, **rest}
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in ("properties", "$defs") and isinstance(value, dict):
                out[key] = {k: inline(v, stack) for k, v in value.items()}
            elif key in (*_SCHEMA_LISTS, *_SCHEMA_VALUES):
                out[key] = inline(value, stack)
            else:
                out[key] = value
        return out

    result: dict[str, Any] = inline(schema, ())
    if recursive:  # recursive models keep (valid) references
        result["$defs"] = {name: inline(d, (name,)) for name, d in defs.items()}

    def tidy(node: dict[str, Any]) -> None:
        node.pop("title", None)
        if node.get("type") == "object" and "properties" in node:
            node.setdefault("additionalProperties", False)

    _walk(result, tidy)
    top: dict[str, Any] = {"type": "object", "properties": result.pop("properties", {})}
    if result.get("required"):
        top["required"] = result.pop("required")
    result.pop("type", None)
    result.pop("additionalProperties", None)
    top.update(result)  # e.g. $defs of recursive models
    top["additionalProperties"] = False
    return top


def _build_model(
    func: Callable[..., Any], where: str, param_docs: Mapping[str, str]
) -> tuple[type[pydantic.BaseModel], dict[str, str], frozenset[str], bool]:
    """The pydantic model of the model-facing parameters, field->name map, injected, **kw."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(f"@tool {where}: cannot read the signature: {exc}") from exc
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception as exc:
        raise ImproperlyConfigured(
            f"@tool {where}: cannot resolve the type hints: {exc}"
        ) from exc

    fields: dict[str, Any] = {}
    names: dict[str, str] = {}
    injected: set[str] = set()
    var_kwargs = False
    for index, (name, param) in enumerate(signature.parameters.items()):
        if param.kind is param.VAR_KEYWORD:
            var_kwargs = True
            continue
        if param.kind is param.VAR_POSITIONAL:
            raise ImproperlyConfigured(f"@tool {where}: *{name} is not supported")
        if param.kind is param.POSITIONAL_ONLY:
            raise ImproperlyConfigured(
                f"@tool {where}: positional-only parameter {name!r} is not supported"
            )
        if index == 0 and name in ("self", "cls"):
            raise ImproperlyConfigured(f"@tool {where}: methods cannot be tools")
        if name in INJECTED_PARAMETERS:
            injected.add(name)
            continue
        default = param.default
        if name in hints:
            annotation = hints[name]
        elif default is not param.empty and isinstance(default, (bool, int, float, str)):
            annotation = type(default)
        elif default is None:
            annotation = str | None
        else:
            annotation = str  # un-annotated: the model sends text
        extra: dict[str, Any] = {}
        if name in param_docs and not _has_description(annotation):
            extra["description"] = param_docs[name]
        info = pydantic.Field(
            default=... if default is param.empty else default, alias=name, **extra
        )
        internal = f"p{index}"
        fields[internal] = (annotation, info)
        names[internal] = name

    try:
        model = pydantic.create_model(
            f"{getattr(func, '__name__', 'tool')}_arguments",
            __config__=pydantic.ConfigDict(extra="ignore"),
            **fields,
        )
    except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError, TypeError) as exc:
        raise ImproperlyConfigured(f"@tool {where}: unsupported parameter type: {exc}") from exc
    return model, names, frozenset(injected), var_kwargs


def _format_validation_error(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err.get("loc", ())) or "arguments"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


# --- light JSON Schema check for operator overrides ---------------------------------------

_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool))
        or (isinstance(v, float) and v.is_integer())
    ),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _check_value(value: Any, schema: Any, path: str) -> list[str]:
    """Errors of ``value`` against the common subset of JSON Schema an override uses."""
    if not isinstance(schema, dict):
        return []
    errors: list[str] = []
    here = path or "arguments"
    types = schema.get("type")
    if isinstance(types, str):
        types = [types]
    if isinstance(types, list) and not any(
        _JSON_TYPES.get(t, lambda v: True)(value) for t in types
    ):
        return [f"{here}: expected {' or '.join(types)}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{here}: must be one of {schema['enum']!r}")
    if "const" in schema and value != schema["const"]:
        errors.append(f"{here}: must be {schema['const']!r}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{here}: too short")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{here}: too long")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{here}: does not match {schema['pattern']!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{here}: must be >= {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{here}: must be <= {schema['maximum']}")
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for key in schema.get("required") or ():
            if key not in value:
                errors.append(f"{path + '.' if path else ''}{key}: Field required")
        for key, sub in value.items():
            sub_path = f"{path}.{key}" if path else key
            if key in props:
                errors.extend(_check_value(sub, props[key], sub_path))
            elif schema.get("additionalProperties") is False:
                errors.append(f"{sub_path}: not allowed")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            errors.extend(_check_value(item, schema["items"], f"{here}[{i}]"))
    if isinstance(schema.get("anyOf"), list) and all(
        _check_value(value, s, path) for s in schema["anyOf"]
    ):
        errors.append(f"{here}: matches none of the allowed shapes")
    return errors


def _is_schema_type(value: Any) -> bool:
    if isinstance(value, str):
        return value in _JSON_TYPES
    return isinstance(value, list) and all(isinstance(t, str) and t in _JSON_TYPES for t in value)


def validate_parameters_schema(schema: Any, tool: Tool | None = None) -> list[str]:
    """Problems with a parameters schema (an operator's override); empty when usable.

    A light structural check: an object schema whose ``properties`` are schemas and whose
    ``required`` names properties. With ``tool``, every parameter the function needs must be
    described, or the model could never call it successfully.
    """
    if not isinstance(schema, dict):
        return ["The schema must be a JSON object."]
    problems: list[str] = []
    if schema.get("type") != "object":
        problems.append('The schema must have "type": "object".')
    props = schema.get("properties", {})
    if not isinstance(props, dict):
        problems.append('"properties" must be an object.')
        props = {}
    for key, sub in props.items():
        if not isinstance(sub, dict):
            problems.append(f'"properties.{key}" must be a schema object.')
        elif "type" in sub and not _is_schema_type(sub["type"]):
            problems.append(f'"properties.{key}.type" is not a JSON Schema type.')
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        problems.append('"required" must be a list of property names.')
    else:
        for name in required:
            if name not in props:
                problems.append(f'"required" names {name!r}, which is not in "properties".')
    if tool is not None and isinstance(props, dict):
        needed = tool.parameters.get("required", [])
        missing = [n for n in needed if n not in props]
        if missing:
            problems.append(
                f"The function {tool.name} needs {', '.join(missing)}; describe "
                "them in \"properties\"."
            )
    return problems


# --- tools and the registry ---------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Tool:
    """A registered tool function and what was derived from it."""

    name: str
    description: str
    func: Callable[..., Any]
    parameters: dict[str, Any]
    args_model: type[pydantic.BaseModel]
    field_names: Mapping[str, str]
    injected: frozenset[str]
    var_kwargs: bool
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
        """Derive a tool from ``func``; raises ``ImproperlyConfigured`` naming it."""
        where = _location(func)
        if not callable(func):
            raise TypeError(f"@tool needs a function, got {func!r}")
        target = inspect.unwrap(func)
        if inspect.isasyncgenfunction(target) or inspect.isgeneratorfunction(target):
            raise ImproperlyConfigured(f"@tool {where}: generators cannot be tools")
        tool_name = str(name or getattr(func, "__name__", ""))
        if not TOOL_NAME_RE.match(tool_name):
            raise ImproperlyConfigured(
                f"@tool {where}: name {tool_name!r} must be 1-64 letters, digits, _ or -"
            )
        if timeout is not None and not timeout > 0:
            raise ImproperlyConfigured(f"@tool {where}: timeout must be > 0, got {timeout!r}")
        doc_description, param_docs = _docstring(func)
        model, names, injected, var_kwargs = _build_model(func, where, param_docs)
        try:
            schema = _tidy_schema(model.model_json_schema())
        except (pydantic.PydanticInvalidForJsonSchema, pydantic.PydanticUserError) as exc:
            raise ImproperlyConfigured(
                f"@tool {where}: a parameter type has no JSON schema: {exc}"
            ) from exc
        is_async = inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
            getattr(target, "__call__", None)  # noqa: B004
        )
        return cls(
            name=tool_name,
            description=(description if description is not None else doc_description).strip(),
            func=func,
            parameters=schema,
            args_model=model,
            field_names=names,
            injected=injected,
            var_kwargs=var_kwargs,
            is_async=is_async,
            location=where,
            timeout=timeout,
            holding_message=holding_message or "",
        )

    def validate(self, arguments: str, override: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Parse and validate the model's JSON arguments into keyword arguments."""
        text = (arguments or "").strip() or "{}"
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ToolArgumentsError(f"arguments are not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ToolArgumentsError("arguments must be a JSON object")
        if override:
            problems = _check_value(data, override, "")
            if problems:
                raise ToolArgumentsError("; ".join(problems))
        try:
            parsed = self.args_model.model_validate(data)
        except pydantic.ValidationError as exc:
            raise ToolArgumentsError(_format_validation_error(exc)) from exc
        return {self.field_names[f]: getattr(parsed, f) for f in parsed.model_fields_set}

    def call_kwargs(self, kwargs: Mapping[str, Any], context: ToolContext) -> dict[str, Any]:
        """The model's arguments plus the injected values the function asks for."""
        injectables = context.injectables()
        out = dict(kwargs)
        for name in INJECTED_PARAMETERS if self.var_kwargs else self.injected:
            out[name] = injectables[name]
        return out

    async def invoke(self, kwargs: Mapping[str, Any], context: ToolContext) -> Any:
        """Run the function: async ones on the loop, sync ones in a worker thread."""
        call_kwargs = self.call_kwargs(kwargs, context)
        if self.is_async:
            return await self.func(**call_kwargs)
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        runner = functools.partial(ctx.run, _run_sync, self.func, call_kwargs)
        value = await loop.run_in_executor(_get_executor(), runner)
        if inspect.isawaitable(value):  # e.g. a partial of an async function
            value = await value
        return value

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
            timeout=timeout or self.timeout or _default_timeout(),
            holding_message=holding_message or self.holding_message,
        )


def _run_sync(func: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    close_old_connections()
    try:
        return func(**kwargs)
    finally:
        close_old_connections()


def _get_executor() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(
            max_workers=MAX_TOOL_THREADS, thread_name_prefix="voiceconv-tool"
        )
    return _executor


def _default_timeout() -> float:
    from voiceconv.conf import voiceconv_settings

    value = voiceconv_settings.TOOL_TIMEOUT
    return float(value) if isinstance(value, (int, float)) and value > 0 else DEFAULT_TIMEOUT


class ToolRegistry:
    """Tools by name. One module-level instance, :data:`registry`."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    def register(self, tool: Tool) -> Tool:
        """Add ``tool``; a different function under the same name is an error naming both."""
        existing = self._tools.get(tool.name)
        if existing is not None and existing.location != tool.location:
            raise ImproperlyConfigured(
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
        f.__voiceconv_tool__ = spec  # type: ignore[attr-defined]
        return f

    if func is not None:
        return decorate(func)
    return decorate


# --- binding to definitions ---------------------------------------------------------------


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


def bind_definition(definition: ToolDefinition, tool: Tool) -> BoundTool:
    """Bind a registered tool with what its ``ToolDefinition`` row says."""
    return BoundTool(
        tool=tool,
        name=tool.name,
        description=(definition.description or definition.code_description or tool.description),
        timeout=definition.timeout_seconds or tool.timeout or _default_timeout(),
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


# --- execution ----------------------------------------------------------------------------


def serialize_result(value: Any) -> str:
    """A tool's return value as the ``function_call_output`` string."""
    if isinstance(value, str):
        return value
    if value is None:
        return '{"ok": true}'
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump_json()
    if isinstance(value, (dict, list, tuple, set, frozenset, int, float, bool)) or (
        dataclasses.is_dataclass(value) and not isinstance(value, type)
    ):
        jsonable = pydantic_core.to_jsonable_python(value, fallback=str)
        return json.dumps(jsonable, ensure_ascii=False)
    return str(value)


def _error_output(message: str) -> str:
    if len(message) > MAX_MODEL_ERROR_CHARS:
        message = message[: MAX_MODEL_ERROR_CHARS - 1] + "…"
    return json.dumps({"error": message}, ensure_ascii=False)


async def execute_tool_call(
    call: ToolCall, tools: Mapping[str, BoundTool], context: ToolContext
) -> ToolResult:
    """Validate and run one function call; every failure becomes an error result.

    Never raises, except ``asyncio.CancelledError`` when the caller cancels the task.
    """
    started_at = timezone.now()
    t0 = time.monotonic()
    sid = context.call.call_sid if context.call is not None else "-"
    error = tb = ""
    output = ""

    bound = tools.get(call.name)
    if bound is None:
        error = f"Unknown tool {call.name!r}"
    else:
        try:
            kwargs = bound.validate(call.arguments)
        except ToolArgumentsError as exc:
            error = f"Invalid arguments for {call.name}: {exc}"
        else:
            try:
                value = await asyncio.wait_for(bound.tool.invoke(kwargs, context), bound.timeout)
                output = serialize_result(value)
            except TimeoutError:
                error = f"{call.name} timed out after {bound.timeout:g} s"
            except Exception as exc:
                error = f"{call.name} failed: {type(exc).__name__}: {exc}"
                tb = traceback_module.format_exc()

    duration_ms = int((time.monotonic() - t0) * 1000)
    if error:
        output = _error_output(error)
        log = logger.error if tb else logger.warning
        log("Tool call %s on call %s: %s", call.call_id, sid, error)
    else:
        logger.debug("Tool %s on call %s took %d ms", call.name, sid, duration_ms)
    return ToolResult(
        call_id=call.call_id,
        name=call.name,
        arguments=call.arguments,
        output=output,
        started_at=started_at,
        duration_ms=duration_ms,
        error=error,
        traceback=tb,
    )


# --- syncing definitions ------------------------------------------------------------------


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
    from django.db import transaction

    from voiceconv.models import ToolDefinition

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


# --- built-in call-control tools ----------------------------------------------------------

_E164_RE = re.compile(r"^\+[1-9]\d{6,14}$")
_SIP_RE = re.compile(r"^sips?:[^@\s<>\"]+@[^\s<>\"]+$", re.IGNORECASE)


def normalize_transfer_target(target: str) -> str:
    """An E.164 number (spaces, dashes, dots and brackets removed) or a ``sip:`` URI.

    Raises ``ValueError`` for anything else.
    """
    text = (target or "").strip()
    if text.lower().startswith(("sip:", "sips:")):
        if _SIP_RE.match(text):
            return text
        raise ValueError(f"{target!r} is not a valid SIP address (sip:user@host)")
    compact = re.sub(r"[\s().\-]", "", text)
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    if _E164_RE.match(compact):
        return compact
    raise ValueError(
        f"{target!r} is not a phone number in international format (+14155550100) "
        "or a SIP address"
    )


@tool
async def end_call(
    reason: str = "The conversation is complete.", control: Any = None
) -> dict[str, str]:
    """End the phone call.

    Use this when the caller says goodbye or the conversation is finished. The call ends after
    your goodbye has been heard, so say a short goodbye right after calling this.

    Args:
        reason: Why the call is ending, in a few words.
    """
    if control is None:
        return {"status": "unavailable", "error": "This call cannot be ended from here."}
    control.end_call("agent_ended")
    return {"status": "ending", "instruction": "Say a short goodbye now."}


@tool
async def transfer_call(target: str, control: Any = None) -> dict[str, str]:
    """Transfer the caller to another phone number or SIP address.

    Args:
        target: The phone number in international format (for example +14155550100) or a SIP
            address (sip:user@example.com).
    """
    try:
        destination = normalize_transfer_target(target)
    except ValueError as exc:
        return {"status": "invalid_target", "error": str(exc)}
    if control is None:
        return {"status": "unavailable", "error": "This call cannot be transferred from here."}
    control.transfer_call(destination)
    return {
        "status": "transferring",
        "target": destination,
        "instruction": "Tell the caller in one short sentence that you are transferring them.",
    }
