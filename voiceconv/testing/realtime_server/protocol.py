"""Validation of Realtime events against the ``openai`` SDK's own types (``openai.types.realtime``).

``validate_server_event`` and ``validate_client_event`` return the problems of one event (an
empty list when it is valid); the stand-in checks everything it sends and receives with them.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable, Mapping
from typing import Any

import pydantic

__all__ = ["validate_client_event", "validate_server_event"]


def _models_by_type(union: Any) -> dict[str, Any]:
    """Map each wire ``type`` literal of an SDK event union to its pydantic model."""
    members = typing.get_args(typing.get_args(union)[0])
    table: dict[str, Any] = {}
    for model in members:
        annotation = model.model_fields["type"].annotation
        for literal in typing.get_args(annotation):
            table[literal] = model
    return table


_SERVER_MODELS: dict[str, Any] | None = None
_CLIENT_MODELS: dict[str, Any] | None = None
_ADAPTERS: dict[Any, pydantic.TypeAdapter[Any]] = {}
# Keys the live service sends that the SDK types do not declare (kept as extras).
_KNOWN_SERVER_EXTRAS = {"session.object", "session.id", "session.expires_at"}


def _tables() -> tuple[dict[str, Any], dict[str, Any]]:
    global _SERVER_MODELS, _CLIENT_MODELS
    if _SERVER_MODELS is None or _CLIENT_MODELS is None:
        # Imported on first use: the SDK's event models take seconds to import; only validation
        # needs them.
        from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent

        _SERVER_MODELS = _models_by_type(RealtimeServerEvent)
        _CLIENT_MODELS = _models_by_type(RealtimeClientEvent)
    return _SERVER_MODELS, _CLIENT_MODELS


def _adapter(model: Any) -> pydantic.TypeAdapter[Any]:
    if model not in _ADAPTERS:
        _ADAPTERS[model] = pydantic.TypeAdapter(model)
    return _ADAPTERS[model]


def _extra_paths(value: Any, prefix: str) -> list[str]:
    """Dotted paths of keys the SDK model did not declare (``model_extra``), depth first."""
    found: list[str] = []
    if isinstance(value, pydantic.BaseModel):
        for key in value.model_extra or {}:
            found.append(f"{prefix}.{key}" if prefix else key)
        for name in type(value).model_fields:
            child = getattr(value, name, None)
            found.extend(_extra_paths(child, f"{prefix}.{name}" if prefix else name))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found.extend(_extra_paths(child, f"{prefix}[{index}]"))
    return found


def _loc_to_param(loc: Iterable[Any]) -> str:
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            if parts:
                parts[-1] += f"[{part}]"
        elif isinstance(part, str) and part[:1].islower() and "[" not in part:
            parts.append(part)
    return ".".join(parts)


def _validate(event: Any, table: dict[str, Any], side: str) -> tuple[Any, list[str]]:
    if not isinstance(event, dict):
        return None, [f"{side} event is not a JSON object"]
    kind = event.get("type")
    model = table.get(kind) if isinstance(kind, str) else None
    if model is None:
        return None, [f"{side} event has unknown type {kind!r}"]
    try:
        parsed = _adapter(model).validate_python(event)
    except pydantic.ValidationError as exc:
        problems = [
            f"{kind}: {_loc_to_param(err['loc']) or '<event>'}: {err['msg']}"
            for err in exc.errors()
        ]
        return None, problems
    return parsed, []


def _describe_problem(problem: str) -> tuple[str, str | None, str]:
    """``(code, param, message)`` of an error event for one validation problem string."""
    _, _, rest = problem.partition(": ")
    param, _, detail = rest.rpartition(": ")
    if detail == "Field required" and param:
        return "missing_required_parameter", param, f"Missing required parameter: '{param}'."
    if detail.startswith("unknown parameter"):
        name = detail.split("'")[1]
        return "unknown_parameter", name, f"Unknown parameter: '{name}'."
    return "invalid_value", param or None, f"Invalid value for '{param or '<event>'}': {detail}."


def validate_server_event(event: Mapping[str, Any]) -> list[str]:
    """Problems with a server event against ``openai.types.realtime`` (empty list = valid).

    Besides schema errors, keys the SDK does not declare are reported, except the few the
    live service is known to add (``session.object``, ``session.id``, ``session.expires_at``).
    """
    server, _ = _tables()
    parsed, problems = _validate(dict(event), server, "server")
    if parsed is not None:
        for path in _extra_paths(parsed, ""):
            if path not in _KNOWN_SERVER_EXTRAS:
                problems.append(f"{event.get('type')}: undeclared key {path!r}")
    return problems


def validate_client_event(event: Mapping[str, Any]) -> list[str]:
    """Problems with a client event against ``openai.types.realtime`` (empty list = valid)."""
    _, client = _tables()
    parsed, problems = _validate(dict(event), client, "client")
    if parsed is not None:
        problems.extend(
            f"{event.get('type')}: unknown parameter {path!r}" for path in _extra_paths(parsed, "")
        )
    return problems


class _ClientError(Exception):
    """A client event the live service would answer with an ``error`` event."""

    def __init__(
        self,
        code: str | None,
        message: str,
        *,
        param: str | None = None,
        error_type: str = "invalid_request_error",
        attribute: bool = True,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.error_type = error_type
        self.attribute = attribute
