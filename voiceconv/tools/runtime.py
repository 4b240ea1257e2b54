"""Running tools during a call: the injected context, results, execution with timeouts.

:func:`execute_tool_call` validates one function call of the model against the agent's
:class:`~voiceconv.tools.registry.BoundTool`, runs it (async tools on the loop, sync tools in a
worker thread of their own pool) within its timeout and turns every outcome into a
:class:`ToolResult`: ``output`` for the model, the rest for the ``ToolInvocation`` record.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import inspect
import json
import logging
import time
import traceback as traceback_module
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import pydantic
import pydantic_core
from django.db import close_old_connections
from django.utils import timezone

from voiceconv.calllog import CallLog
from voiceconv.events import CallInfo
from voiceconv.exceptions import ToolArgumentsError
from voiceconv.session import ToolCall
from voiceconv.tools.registry import BoundTool, Tool
from voiceconv.tools.schema import INJECTED_PARAMETERS

__all__ = [
    "CallControl",
    "ToolContext",
    "ToolResult",
    "execute_tool_call",
    "invoke",
    "serialize_result",
]

logger = logging.getLogger("voiceconv.tools")

#: Sync tools run here, so a stuck tool cannot starve the loop's default executor (DNS etc.).
MAX_TOOL_THREADS = 64
#: Longest error text sent to the model (the full text is kept on the invocation).
MAX_MODEL_ERROR_CHARS = 500

_executor: ThreadPoolExecutor | None = None


class CallControl(Protocol):
    """What a tool may do to the live call; implemented by the consumer."""

    def end_call(self, reason: str = "agent_ended") -> None: ...

    def transfer_call(self, target: str) -> None: ...

    def transfer_refusal(self, target: str) -> str | None:
        """Why a transfer to ``target`` would be refused (the agent's allow-list); None: ok."""
        ...

    def warm_transfer(self, target: str, brief: str) -> None:
        """Brief a human at ``target`` on a call of their own, then bridge the caller in."""
        ...

    def send_dtmf(self, digits: str) -> None:
        """Play DTMF tones to the other party (``0-9 * # A-D``, ``w`` = half a second)."""
        ...


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


def _call_kwargs(tool: Tool, kwargs: Mapping[str, Any], context: ToolContext) -> dict[str, Any]:
    """The model's arguments plus the injected values the function asks for."""
    injectables = context.injectables()
    out = dict(kwargs)
    names = INJECTED_PARAMETERS if tool.arguments.var_kwargs else tool.arguments.injected
    for name in names:
        out[name] = injectables[name]
    return out


async def invoke(tool: Tool, kwargs: Mapping[str, Any], context: ToolContext) -> Any:
    """Run ``tool``'s function: async ones on the loop, sync ones in a worker thread."""
    call_kwargs = _call_kwargs(tool, kwargs, context)
    if tool.is_async:
        return await tool.func(**call_kwargs)
    loop = asyncio.get_running_loop()
    ctx = contextvars.copy_context()
    runner = functools.partial(ctx.run, _run_sync, tool.func, call_kwargs)
    value = await loop.run_in_executor(_get_executor(), runner)
    if inspect.isawaitable(value):  # e.g. a partial of an async function
        value = await value
    return value


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
    log = CallLog(logger, context.call.call_sid if context.call is not None else "")
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
                value = await asyncio.wait_for(invoke(bound.tool, kwargs, context), bound.timeout)
                output = serialize_result(value)
            except TimeoutError:
                error = f"{call.name} timed out after {bound.timeout:g} s"
            except Exception as exc:
                error = f"{call.name} failed: {type(exc).__name__}: {exc}"
                tb = traceback_module.format_exc()

    duration_ms = int((time.monotonic() - t0) * 1000)
    if error:
        output = _error_output(error)
        (log.error if tb else log.warning)("tool call %s: %s", call.call_id, error)
    else:
        log.debug("tool %s took %d ms", call.name, duration_ms)
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

