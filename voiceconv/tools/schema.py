"""A tool's function signature as the model sees it: JSON schema, argument parsing.

:func:`arguments_model` turns a signature (and its docstring) into a pydantic model of the
model-facing parameters; :func:`json_schema` renders that model as the compact schema offered in
the Realtime session's ``tools`` list; :func:`parse_arguments` turns the model's JSON arguments
back into keyword arguments. Operator overrides (``ToolDefinition.parameters_override``) are
checked with :func:`validate_parameters_schema` when saved and with :func:`schema_errors` when the
model sends arguments.

Nothing here imports Django models or the registry.
"""

from __future__ import annotations

import inspect
import json
import re
import typing
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

import docstring_parser
import pydantic
from pydantic.fields import FieldInfo

from voiceconv.exceptions import ToolArgumentsError, ToolDeclarationError

__all__ = [
    "INJECTED_PARAMETERS",
    "Arguments",
    "arguments_model",
    "describe",
    "json_schema",
    "location",
    "parse_arguments",
    "schema_errors",
    "validate_parameters_schema",
]

#: Parameter names the runtime fills in; never part of a tool's schema.
INJECTED_PARAMETERS = frozenset({"state", "connection", "call", "control"})


class Arguments(NamedTuple):
    """The model-facing parameters of a function, as :func:`arguments_model` derives them."""

    model: type[pydantic.BaseModel]
    #: pydantic field name -> the function's parameter name.
    field_names: Mapping[str, str]
    #: Injected parameters the function asks for by name.
    injected: frozenset[str]
    #: The function takes ``**kwargs`` (and so receives every injected value).
    var_kwargs: bool


def location(func: Callable[..., Any]) -> str:
    """``module:qualname`` of ``func``, for error messages."""
    module = getattr(func, "__module__", None) or "?"
    qualname = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
    return f"{module}:{qualname}"

_WRAPPED_LINE_RE = re.compile(r"(?<=\S)[ \t]*\n[ \t]*(?=[^\s\-*\d])")


def _unwrap(text: str) -> str:
    """Join lines wrapped inside a paragraph; keep blank lines and list items."""
    return _WRAPPED_LINE_RE.sub(" ", text.strip())


def describe(func: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """The docstring's description and its per-parameter descriptions."""
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


def arguments_model(
    func: Callable[..., Any], where: str, param_docs: Mapping[str, str]
) -> Arguments:
    """The pydantic model of ``func``'s model-facing parameters."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError) as exc:
        raise ToolDeclarationError(f"@tool {where}: cannot read the signature: {exc}") from exc
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception as exc:
        raise ToolDeclarationError(
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
            raise ToolDeclarationError(f"@tool {where}: *{name} is not supported")
        if param.kind is param.POSITIONAL_ONLY:
            raise ToolDeclarationError(
                f"@tool {where}: positional-only parameter {name!r} is not supported"
            )
        if index == 0 and name in ("self", "cls"):
            raise ToolDeclarationError(f"@tool {where}: methods cannot be tools")
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
        raise ToolDeclarationError(f"@tool {where}: unsupported parameter type: {exc}") from exc
    return Arguments(model, names, frozenset(injected), var_kwargs)


def json_schema(model: type[pydantic.BaseModel], where: str) -> dict[str, Any]:
    """The compact JSON schema of an arguments model (``$defs`` inlined, no titles)."""
    try:
        return _tidy_schema(model.model_json_schema())
    except (pydantic.PydanticInvalidForJsonSchema, pydantic.PydanticUserError) as exc:
        raise ToolDeclarationError(
            f"@tool {where}: a parameter type has no JSON schema: {exc}"
        ) from exc


def parse_arguments(
    arguments: str, args: Arguments, override: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The model's JSON arguments as keyword arguments; ``ToolArgumentsError`` if they don't fit.

    With ``override`` (an operator's schema) the arguments must fit it as well as the signature.
    """
    text = (arguments or "").strip() or "{}"
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ToolArgumentsError(f"arguments are not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ToolArgumentsError("arguments must be a JSON object")
    if override:
        problems = schema_errors(data, override)
        if problems:
            raise ToolArgumentsError("; ".join(problems))
    try:
        parsed = args.model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ToolArgumentsError(_format_validation_error(exc)) from exc
    return {args.field_names[f]: getattr(parsed, f) for f in parsed.model_fields_set}


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


def schema_errors(value: Any, schema: Any) -> list[str]:
    """Errors of ``value`` against the common subset of JSON Schema an override uses."""
    return _check_value(value, schema, "")


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


class Declared(Protocol):
    """What :func:`validate_parameters_schema` needs to know of a registered tool."""

    @property
    def name(self) -> str: ...

    @property
    def parameters(self) -> dict[str, Any]: ...


def validate_parameters_schema(schema: Any, tool: Declared | None = None) -> list[str]:
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

