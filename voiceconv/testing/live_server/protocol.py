"""Validation of GPT-Live events against the ``openai`` SDK's own types (``openai.types.live``).

As :mod:`voiceconv.testing.realtime_server.protocol` does for Realtime: each function returns the
problems of one event (an empty list when it is valid). Function calls a Responses delegation
streams inside ``response.event`` are checked against ``openai.types.responses`` too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from voiceconv.testing.realtime_server.protocol import _extra_paths, _models_by_type, _validate

__all__ = ["validate_live_client_event", "validate_live_server_event"]

_SERVER: dict[str, Any] | None = None
_CLIENT: dict[str, Any] | None = None
_NESTED: dict[str, Any] | None = None


def live_tables() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(server, client, nested Responses stream) ``type`` → SDK model tables."""
    global _SERVER, _CLIENT, _NESTED
    if _SERVER is None or _CLIENT is None or _NESTED is None:
        # Imported on first use: the SDK's event models take seconds to import; only validation
        # needs them.
        from openai.types.live import ClientEvent, ServerEvent
        from openai.types.responses import ResponseStreamEvent

        _SERVER = _models_by_type(ServerEvent)
        _CLIENT = _models_by_type(ClientEvent)
        _NESTED = _models_by_type(ResponseStreamEvent)
    return _SERVER, _CLIENT, _NESTED


def validate_live_server_event(event: Mapping[str, Any]) -> list[str]:
    """Problems with a GPT-Live server event (empty list = valid); undeclared keys included.

    A ``response.event``'s nested Responses event is validated against its own SDK type.
    """
    server, _, nested = live_tables()
    parsed, problems = _validate(dict(event), server, "server")
    if parsed is None:
        return problems
    problems.extend(f"{event.get('type')}: undeclared key {p!r}" for p in _extra_paths(parsed, ""))
    if event.get("type") == "response.event":
        inner, inner_problems = _validate(dict(event.get("event") or {}), nested, "nested")
        problems.extend(f"response.event: {p}" for p in inner_problems)
        if inner is not None:
            extra = _extra_paths(inner, "")
            problems.extend(f"response.event: undeclared key {p!r}" for p in extra)
    return problems


def validate_live_client_event(event: Mapping[str, Any]) -> list[str]:
    """Problems with a GPT-Live client event (empty list = valid); unknown keys included."""
    _, client, _ = live_tables()
    parsed, problems = _validate(dict(event), client, "client")
    if parsed is not None:
        problems.extend(
            f"{event.get('type')}: unknown parameter {p!r}" for p in _extra_paths(parsed, "")
        )
    return problems
