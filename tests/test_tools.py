"""@tool: schemas, docstrings, injection, execution, registry, definitions, checks."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import enum
import itertools
import json
import logging
import sys
import threading
import time
from datetime import datetime
from io import StringIO
from pathlib import Path
from typing import Annotated, Any, Literal, NotRequired, Optional

import pydantic
import pytest
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.management import call_command
from django.test import override_settings
from django.utils.module_loading import autodiscover_modules
from openai.types.realtime import RealtimeFunctionTool, RealtimeFunctionToolParam
from openai.types.realtime.realtime_session_create_request import RealtimeSessionCreateRequest
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

import voiceconv
import voiceconv.models.tools
from tests.conftest import run_without_django
from voiceconv.checks_tools import check_tool_definitions
from voiceconv.events import CallInfo
from voiceconv.models import Agent, Call, ToolDefinition, ToolInvocation
from voiceconv.session import ToolCall
from voiceconv.tools.binding import sync_tool_definitions, tools_for_agent
from voiceconv.tools.registry import DEFAULT_TIMEOUT, Tool, registry, tool
from voiceconv.tools.runtime import ToolContext, execute_tool_call, serialize_result
from voiceconv.tools.schema import validate_parameters_schema


@pytest.fixture
def isolated() -> Any:
    with registry.isolated() as reg:
        yield reg


def schema(func: Any) -> dict[str, Any]:
    return Tool.from_function(func).parameters


def ctx(**kwargs: Any) -> ToolContext:
    kwargs.setdefault("call", CallInfo(call_sid="CA" + "1" * 32, stream_sid="MZ" + "2" * 32))
    return ToolContext(**kwargs)


async def run(func: Any, arguments: Any = "{}", context: ToolContext | None = None,
              **bind: Any) -> Any:
    spec = Tool.from_function(func)
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return await execute_tool_call(
        ToolCall(call_id="call_1", name=spec.name, arguments=text),
        {spec.name: spec.bind(**bind)},
        context or ctx(),
    )


OBJ = {"type": "object", "additionalProperties": False}


# --- schemas ------------------------------------------------------------------------------


def test_schema_scalars_defaults_and_required() -> None:
    def f(name: str, count: int, ratio: float = 1.5, loud: bool = False) -> None: ...

    assert schema(f) == {
        **OBJ,
        "properties": {
            "name": {"type": "string"},
            "count": {"type": "integer"},
            "ratio": {"type": "number", "default": 1.5},
            "loud": {"type": "boolean", "default": False},
        },
        "required": ["name", "count"],
    }


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Size(enum.IntEnum):
    SMALL = 1
    LARGE = 3


def test_schema_literal_and_enum() -> None:
    def f(unit: Literal["c", "f"], color: Color = Color.RED, size: Size = Size.SMALL,
          mode: Literal["fast"] = "fast") -> None: ...

    assert schema(f) == {
        **OBJ,
        "properties": {
            "unit": {"type": "string", "enum": ["c", "f"]},
            "color": {"type": "string", "enum": ["red", "green"], "default": "red"},
            "size": {"type": "integer", "enum": [1, 3], "default": 1},
            "mode": {"type": "string", "const": "fast", "default": "fast"},
        },
        "required": ["unit"],
    }


def test_schema_optional_both_spellings() -> None:
    def f(a: Optional[int] = None, b: str | None = None, c: str | None = ...) -> None:  # type: ignore[assignment]  # noqa: UP045
        ...

    nullable_int = {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    nullable_str = {"anyOf": [{"type": "string"}, {"type": "null"}]}
    result = schema(f)
    assert result["properties"]["a"] == {**nullable_int, "default": None}
    assert result["properties"]["b"] == {**nullable_str, "default": None}


def test_schema_optional_required_without_default() -> None:
    def f(a: str | None) -> None: ...

    assert schema(f) == {
        **OBJ,
        "properties": {"a": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
        "required": ["a"],
    }


def test_schema_lists() -> None:
    def f(tags: list[str], counts: list[int] | None = None) -> None: ...

    assert schema(f) == {
        **OBJ,
        "properties": {
            "tags": {"type": "array", "items": {"type": "string"}},
            "counts": {
                "anyOf": [{"type": "array", "items": {"type": "integer"}}, {"type": "null"}],
                "default": None,
            },
        },
        "required": ["tags"],
    }


class Address(TypedDict):
    street: str
    zip_code: int
    note: NotRequired[str]


def test_schema_typeddict_inlined_without_titles() -> None:
    def f(address: Address) -> None: ...

    assert schema(f) == {
        **OBJ,
        "properties": {
            "address": {
                "type": "object",
                "properties": {
                    "street": {"type": "string"},
                    "zip_code": {"type": "integer"},
                    "note": {"type": "string"},
                },
                "required": ["street", "zip_code"],
                "additionalProperties": False,
            }
        },
        "required": ["address"],
    }


class OrderLine(pydantic.BaseModel):
    """One line of an order."""

    sku: str
    quantity: int = 1
    title: str = ""  # a field named like the keyword must survive the tidy-up


def test_schema_pydantic_model_list() -> None:
    def f(lines: list[OrderLine]) -> None: ...

    assert schema(f) == {
        **OBJ,
        "properties": {
            "lines": {
                "type": "array",
                "items": {
                    "type": "object",
                    "description": "One line of an order.",
                    "properties": {
                        "sku": {"type": "string"},
                        "quantity": {"type": "integer", "default": 1},
                        "title": {"type": "string", "default": ""},
                    },
                    "required": ["sku"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["lines"],
    }


class TreeNode(pydantic.BaseModel):
    name: str
    children: list[TreeNode] = []


def test_schema_recursive_model_keeps_valid_refs() -> None:
    def f(tree: TreeNode) -> None: ...

    result = schema(f)
    node = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "children": {"type": "array", "items": {"$ref": "#/$defs/TreeNode"},
                         "default": []},
        },
        "required": ["name"],
        "additionalProperties": False,
    }
    assert result["properties"]["tree"] == node
    assert result["$defs"] == {"TreeNode": node}


def test_schema_no_parameters_and_unannotated() -> None:
    def none() -> None: ...

    def loose(city, units="metric", days=3, note=None) -> None: ...  # type: ignore[no-untyped-def]

    assert schema(none) == {**OBJ, "properties": {}}
    assert schema(loose) == {
        **OBJ,
        "properties": {
            "city": {"type": "string"},
            "units": {"type": "string", "default": "metric"},
            "days": {"type": "integer", "default": 3},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
        },
        "required": ["city"],
    }


def test_schema_annotated_field_description_wins_over_docstring() -> None:
    def f(city: Annotated[str, pydantic.Field(description="From Field.")]) -> None:
        """Do it.

        Args:
            city: From the docstring.
        """

    assert schema(f)["properties"]["city"] == {"type": "string", "description": "From Field."}


# --- docstrings ---------------------------------------------------------------------------


def test_google_docstring() -> None:
    def lookup_order(order_id: str, verbose: bool = False) -> dict:
        """Look up an order.

        Use when the caller gives an order number. The lookup is
        fast and read-only.

        Args:
            order_id: The order number, as the caller
                reads it out.
            verbose: Include every line.

        Returns:
            The order.
        """
        return {}

    spec = Tool.from_function(lookup_order)
    assert spec.name == "lookup_order"
    assert spec.description == (
        "Look up an order.\n\nUse when the caller gives an order number. "
        "The lookup is fast and read-only."
    )
    assert spec.parameters["properties"]["order_id"] == {
        "type": "string",
        "description": "The order number, as the caller reads it out.",
    }
    assert spec.parameters["properties"]["verbose"]["description"] == "Include every line."


def test_rest_docstring() -> None:
    def weather(city: str, days: int = 1) -> str:
        """Get the forecast.

        :param city: City name.
        :param days: How many days ahead.
        :returns: A sentence.
        """
        return ""

    spec = Tool.from_function(weather)
    assert spec.description == "Get the forecast."
    assert spec.parameters["properties"] == {
        "city": {"type": "string", "description": "City name."},
        "days": {"type": "integer", "default": 1, "description": "How many days ahead."},
    }


def test_numpy_docstring() -> None:
    def weather(city: str) -> str:
        """Get the forecast.

        Parameters
        ----------
        city : str
            City name.
        """
        return ""

    spec = Tool.from_function(weather)
    assert spec.description == "Get the forecast."
    assert spec.parameters["properties"]["city"]["description"] == "City name."


def test_decorator_options_override(isolated: Any) -> None:
    @tool(name="weather_now", description="Custom.", timeout=2.5, holding_message="One moment.")
    def anything(city: str) -> str:
        """Docstring."""
        return city

    spec = registry.get("weather_now")
    assert spec is not None and spec.func is anything
    assert (spec.description, spec.timeout, spec.holding_message) == ("Custom.", 2.5, "One moment.")
    assert anything("x") == "x"  # the function is returned unchanged
    assert spec.bind().timeout == 2.5


def test_tool_is_reexported_from_package() -> None:
    assert voiceconv.tool is tool


# --- bad registrations --------------------------------------------------------------------


class Opaque:
    pass


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def bad(*items: str): ...", "*items is not supported"),
        ("def bad(x: Opaque): ...", "unsupported parameter type"),
        ("def bad(self, x: int): ...", "methods cannot be tools"),
        ("def bad(x: int, /): ...", "positional-only"),
        ("def bad(x: 'Missing'): ...", "cannot resolve the type hints"),
        ("def bad():\n    yield 1", "generators cannot be tools"),
    ],
)
def test_bad_registrations_fail_naming_the_function(
    isolated: Any, source: str, message: str
) -> None:
    namespace: dict[str, Any] = {"Opaque": Opaque, "__name__": "tests.fake_module"}
    exec(source, namespace)
    with pytest.raises(ImproperlyConfigured) as info:
        tool(namespace["bad"])
    assert message in str(info.value)
    assert str(info.value).startswith("@tool tests.fake_module:bad: ")
    assert "bad" not in registry


def test_bad_name_and_timeout(isolated: Any) -> None:
    def f() -> None: ...

    with pytest.raises(ImproperlyConfigured, match="name 'has space'"):
        tool(name="has space")(f)
    with pytest.raises(ImproperlyConfigured, match="timeout must be > 0"):
        tool(timeout=0)(f)
    with pytest.raises(TypeError):
        Tool.from_function(42)  # type: ignore[arg-type]


def test_duplicate_names_error_names_both_locations(isolated: Any) -> None:
    def first() -> None: ...

    def second() -> None: ...

    tool(name="dup")(first)
    tool(name="dup")(first)  # the same function again (re-import) is fine
    with pytest.raises(ImproperlyConfigured) as info:
        tool(name="dup")(second)
    text = str(info.value)
    where = "tests.test_tools:test_duplicate_names_error_names_both_locations.<locals>"
    assert f"{where}.first and {where}.second" in text
    assert registry.get("dup").func is first  # type: ignore[union-attr]


def test_registry_api(isolated: Any) -> None:
    before = {t.name for t in registry.all()}
    assert {"get_time", "end_call", "transfer_call"} <= before

    @tool
    def zeta() -> None: ...

    assert registry.get("zeta") is not None and "zeta" in registry
    assert [t.name for t in registry.all()] == sorted(before | {"zeta"})
    registry.clear()
    assert len(registry) == 0 and registry.get("get_time") is None


def test_isolation_restores_registry() -> None:
    assert registry.get("get_time") is not None  # cleared by the test above, restored


# --- autodiscovery ------------------------------------------------------------------------


def make_app(root: Path, label: str, body: str) -> None:
    package = root / label
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tools.py").write_text("from voiceconv import tool\n\n" + body)


@pytest.fixture
def app_root(tmp_path: Path) -> Any:
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in [m for m in sys.modules if m.startswith("vc_demo_")]:
        del sys.modules[name]


def test_autodiscovery_registers_project_and_builtin_tools() -> None:
    assert registry.get("get_time").location == "project.tools:get_time"  # type: ignore[union-attr]
    assert registry.get("end_call").location == "voiceconv.tools.builtins:end_call"  # type: ignore[union-attr]
    assert registry.get("transfer_call").is_async  # type: ignore[union-attr]


def test_autodiscovery_imports_tools_modules_of_installed_apps(
    isolated: Any, app_root: Path, settings: Any
) -> None:
    make_app(app_root, "vc_demo_one", "@tool\ndef demo_lookup(code: str):\n    return code\n")
    with override_settings(INSTALLED_APPS=[*settings.INSTALLED_APPS, "vc_demo_one"]):
        autodiscover_modules("tools")
    assert registry.get("demo_lookup").location == "vc_demo_one.tools:demo_lookup"  # type: ignore[union-attr]


def test_autodiscovery_duplicate_across_apps(isolated: Any, app_root: Path, settings: Any) -> None:
    make_app(app_root, "vc_demo_a", "@tool\ndef clash():\n    pass\n")
    make_app(app_root, "vc_demo_b", "@tool\ndef clash():\n    pass\n")
    apps = [*settings.INSTALLED_APPS, "vc_demo_a", "vc_demo_b"]
    with pytest.raises(ImproperlyConfigured) as info, override_settings(INSTALLED_APPS=apps):
        autodiscover_modules("tools")
    assert "vc_demo_a.tools:clash" in str(info.value)
    assert "vc_demo_b.tools:clash" in str(info.value)


# --- execution ----------------------------------------------------------------------------


async def test_ancestor_readme_example_verbatim() -> None:
    from project.tools import get_time

    spec = registry.get("get_time")
    assert spec is not None and spec.func is get_time
    assert spec.description == "Get the current time."
    assert spec.parameters == {**OBJ, "properties": {}}
    assert spec.arguments.injected == {"state", "connection"} and not spec.is_async
    result = await execute_tool_call(
        ToolCall(call_id="call_t", name="get_time", arguments="{}"),
        {"get_time": spec.bind()},
        ctx(state={"n": 1}, connection=object()),
    )
    assert result.error == ""
    value = json.loads(result.output)
    assert list(value) == ["time"]
    assert datetime.strptime(value["time"], "%H:%M")
    assert get_time() == {"time": datetime.now().strftime("%H:%M")}  # still a plain function


async def test_injection_of_each_name() -> None:
    seen: dict[str, Any] = {}

    def every(x: int, state: Any = None, connection: Any = None, call: Any = None,
              control: Any = None) -> None:
        seen.update(x=x, state=state, connection=connection, call=call, control=control)

    context = ctx(state={"k": 1}, connection=object(), control=object())
    result = await run(every, {"x": 3}, context)
    assert result.output == '{"ok": true}'
    assert seen == {"x": 3, "state": context.state, "connection": context.connection,
                    "call": context.call, "control": context.control}
    assert schema(every)["properties"] == {"x": {"type": "integer"}}


async def test_injection_only_what_is_asked_and_kwargs_get_all() -> None:
    def only_state(state: dict) -> str:
        state["visits"] = state.get("visits", 0) + 1
        return "ok"

    def catch_all(q: str, **kwargs: Any) -> dict:
        return {"q": q, "keys": sorted(kwargs)}

    context = ctx(state={})
    assert (await run(only_state, "{}", context)).output == "ok"
    assert (await run(only_state, "", context)).output == "ok"  # empty arguments string
    assert context.state == {"visits": 2}
    result = await run(catch_all, {"q": "hi", "extra": 1}, context)
    assert json.loads(result.output) == {
        "q": "hi", "keys": ["call", "connection", "control", "state"]
    }


async def test_async_tool_runs_on_the_loop_and_sync_in_a_thread() -> None:
    loop_thread = threading.get_ident()
    where: dict[str, int] = {}

    async def async_tool() -> str:
        where["async"] = threading.get_ident()
        await asyncio.sleep(0)
        return "a"

    def sync_tool() -> str:
        where["sync"] = threading.get_ident()
        return "s"

    assert (await run(async_tool)).output == "a"
    assert (await run(sync_tool)).output == "s"
    assert where["async"] == loop_thread
    assert where["sync"] != loop_thread


async def test_sync_tool_does_not_block_the_loop() -> None:
    def slow() -> str:
        time.sleep(0.4)
        return "done"

    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    result = await run(slow)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert result.output == "done"
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert len(ticks) >= 15
    assert max(gaps) < 0.15  # generous: a blocked loop would show one ~400 ms gap


async def test_several_calls_run_concurrently() -> None:
    def slow_sync(n: int) -> int:
        time.sleep(0.3)
        return n

    async def slow_async(n: int) -> int:
        await asyncio.sleep(0.3)
        return n * 10

    tools = {
        "slow_sync": Tool.from_function(slow_sync).bind(),
        "slow_async": Tool.from_function(slow_async).bind(),
    }
    calls = [
        ToolCall(call_id=f"c{i}", name=name, arguments=json.dumps({"n": i}))
        for i, name in enumerate(["slow_sync", "slow_sync", "slow_sync", "slow_async"])
    ]
    t0 = time.monotonic()
    results = await asyncio.gather(*(execute_tool_call(c, tools, ctx()) for c in calls))
    elapsed = time.monotonic() - t0
    assert [r.output for r in results] == ["0", "1", "2", "30"]
    assert [r.call_id for r in results] == ["c0", "c1", "c2", "c3"]
    assert elapsed < 0.8  # sequential would take 1.2 s
    assert all(r.duration_ms >= 290 for r in results)


async def test_validation_error_is_reported_before_calling(caplog: Any) -> None:
    called = []

    def book(day: Literal["mon", "tue"], seats: int) -> str:
        called.append(1)
        return "booked"

    caplog.set_level(logging.WARNING, logger="voiceconv.tools")
    result = await run(book, {"day": "sun", "seats": "many"})
    assert not called
    assert not result.ok
    assert result.error.startswith("Invalid arguments for book: day: Input should be 'mon' or")
    assert "seats: Input should be a valid integer" in result.error
    assert json.loads(result.output) == {"error": result.error}
    assert "CA" + "1" * 32 in caplog.text and "call_1" in caplog.text

    missing = await run(book, {"day": "mon"})
    assert "seats: Field required" in missing.error
    for bad in ("{not json", "[1, 2]"):
        result = await run(book, bad)
        assert result.error.startswith("Invalid arguments for book: arguments ")
    assert not called
    coerced = await run(book, {"day": "mon", "seats": "2", "unknown": True})
    assert coerced.output == "booked"  # lax ints, unknown keys ignored


async def test_exception_becomes_error_output_with_traceback(caplog: Any) -> None:
    def broken(x: int) -> None:
        raise RuntimeError(f"no luck with {x}")

    with caplog.at_level(logging.ERROR, logger="voiceconv.tools"):
        result = await run(broken, {"x": 7})
    assert result.error == "broken failed: RuntimeError: no luck with 7"
    assert json.loads(result.output) == {"error": "broken failed: RuntimeError: no luck with 7"}
    assert "Traceback" in result.traceback and "no luck with 7" in result.traceback
    assert "CA" + "1" * 32 in caplog.text


async def test_async_exception_and_long_error_truncated_for_model() -> None:
    async def broken() -> None:
        raise ValueError("x" * 2000)

    result = await run(broken)
    assert len(result.error) > 2000
    assert len(json.loads(result.output)["error"]) == 500


async def test_timeouts_sync_and_async() -> None:
    def slow_sync() -> str:
        time.sleep(0.5)
        return "late"

    async def slow_async() -> str:
        await asyncio.sleep(5)
        return "late"

    t0 = time.monotonic()
    results = await asyncio.gather(run(slow_sync, timeout=0.1), run(slow_async, timeout=0.1))
    assert time.monotonic() - t0 < 0.45
    assert [r.error for r in results] == [
        "slow_sync timed out after 0.1 s", "slow_async timed out after 0.1 s"
    ]
    assert json.loads(results[0].output) == {"error": "slow_sync timed out after 0.1 s"}


async def test_unknown_tool() -> None:
    result = await execute_tool_call(ToolCall("call_x", "nope", "{}"), {}, ctx())
    assert result.error == "Unknown tool 'nope'"
    assert result.output == '{"error": "Unknown tool \'nope\'"}'


async def test_cancellation_propagates() -> None:
    async def forever() -> None:
        await asyncio.sleep(10)

    task = asyncio.create_task(run(forever))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_default_timeout() -> None:
    def f() -> None: ...

    assert Tool.from_function(f).bind().timeout == DEFAULT_TIMEOUT == 10.0


# --- serialisation ------------------------------------------------------------------------


@dataclasses.dataclass
class Forecast:
    city: str
    when: datetime
    color: Color


class Booking(pydantic.BaseModel):
    ref: str
    seats: int


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"a": 1, "b": "é"}, '{"a": 1, "b": "é"}'),
        ([1, "two", None], '[1, "two", null]'),
        ((1, 2), "[1, 2]"),
        ("plain text", "plain text"),
        ("", ""),
        (None, '{"ok": true}'),
        (42, "42"),
        (True, "true"),
        (2.5, "2.5"),
        (b"bytes", "bytes"),
        (Booking(ref="B1", seats=2), '{"ref":"B1","seats":2}'),
        (
            Forecast("Oslo", datetime(2025, 6, 2, 9, 30), Color.GREEN),
            '{"city": "Oslo", "when": "2025-06-02T09:30:00", "color": "green"}',
        ),
        ({"when": datetime(2025, 1, 1), "obj": Opaque}, None),
        (Opaque, str(Opaque)),
    ],
)
def test_serialize_result(value: Any, expected: str | None) -> None:
    out = serialize_result(value)
    if expected is None:
        assert json.loads(out) == {"when": "2025-01-01T00:00:00", "obj": str(Opaque)}
    else:
        assert out == expected


# --- binding, definitions, agents ---------------------------------------------------------


def test_bound_definition_matches_ga_session_tool() -> None:
    spec = registry.get("transfer_call")
    assert spec is not None
    entry = spec.bind(description="Hand over.").definition()
    assert set(entry) == set(RealtimeFunctionToolParam.__annotations__)
    assert entry["type"] == "function" and entry["name"] == "transfer_call"
    assert entry["description"] == "Hand over."
    assert RealtimeFunctionTool.model_validate(entry).model_dump(exclude_none=True) == entry
    session = RealtimeSessionCreateRequest.model_validate(
        {"type": "realtime", "tools": [entry, registry.get("get_time").bind().definition()]}  # type: ignore[union-attr]
    )
    assert [t.name for t in session.tools] == ["transfer_call", "get_time"]  # type: ignore[union-attr]
    json.dumps(entry)  # JSON-serialisable


async def test_override_schema_is_offered_and_enforced() -> None:
    override = {
        "type": "object",
        "properties": {"target": {"type": "string", "enum": ["+14155550100"],
                                  "description": "The front desk."}},
        "required": ["target"],
    }
    spec = registry.get("transfer_call")
    assert spec is not None
    bound = spec.bind(parameters=override)
    assert bound.definition()["parameters"] == override
    transfers: list[str] = []

    class Control:
        def end_call(self, reason: str = "agent_ended") -> None: ...

        def transfer_call(self, target: str) -> None:
            transfers.append(target)

        def transfer_refusal(self, target: str) -> str | None:
            return None

        def send_dtmf(self, digits: str) -> None: ...

    context = ctx(control=Control())
    refused = await execute_tool_call(
        ToolCall("c1", "transfer_call", '{"target": "+19005550000"}'), {"transfer_call": bound},
        context,
    )
    assert "must be one of ['+14155550100']" in refused.error
    allowed = await execute_tool_call(
        ToolCall("c2", "transfer_call", '{"target": "+14155550100"}'), {"transfer_call": bound},
        context,
    )
    assert allowed.ok and transfers == ["+14155550100"]


def test_validate_parameters_schema() -> None:
    spec = registry.get("transfer_call")
    ok = {"type": "object", "properties": {"target": {"type": "string"}}, "required": ["target"]}
    assert validate_parameters_schema(ok, spec) == []
    assert validate_parameters_schema([], None) == ["The schema must be a JSON object."]
    problems = validate_parameters_schema(
        {"type": "array", "properties": {"x": 1, "y": {"type": "text"}}, "required": ["z"]}, spec
    )
    assert problems == [
        'The schema must have "type": "object".',
        '"properties.x" must be a schema object.',
        '"properties.y.type" is not a JSON Schema type.',
        "\"required\" names 'z', which is not in \"properties\".",
        'The function transfer_call needs target; describe them in "properties".',
    ]


# --- built-in call-control tools ----------------------------------------------------------


class RecordingControl:
    def __init__(self) -> None:
        self.actions: list[tuple[str, str]] = []

    def end_call(self, reason: str = "agent_ended") -> None:
        self.actions.append(("end", reason))

    def transfer_call(self, target: str) -> None:
        self.actions.append(("transfer", target))

    def transfer_refusal(self, target: str) -> str | None:
        return None

    def send_dtmf(self, digits: str) -> None:
        self.actions.append(("dtmf", digits))


async def builtin(name: str, arguments: dict[str, Any], control: Any) -> Any:
    spec = registry.get(name)
    assert spec is not None
    result = await execute_tool_call(
        ToolCall("c", name, json.dumps(arguments)), {name: spec.bind()}, ctx(control=control)
    )
    return json.loads(result.output)


async def test_end_call_tool() -> None:
    control = RecordingControl()
    out = await builtin("end_call", {"reason": "caller said bye"}, control)
    assert out == {"status": "ending", "instruction": "Say a short goodbye now."}
    assert control.actions == [("end", "agent_ended")]
    assert (await builtin("end_call", {}, None))["status"] == "unavailable"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("+1 (415) 555-0100", "+14155550100"),
        ("0044 20 7946 0958", "+442079460958"),
        ("sip:desk@example.com", "sip:desk@example.com"),
    ],
)
async def test_transfer_call_tool(target: str, expected: str) -> None:
    control = RecordingControl()
    out = await builtin("transfer_call", {"target": target}, control)
    assert out["status"] == "transferring" and out["target"] == expected
    assert control.actions == [("transfer", expected)]


@pytest.mark.parametrize("target", ["555-0100", "call mom", "sip:nohost", "+0123456789"])
async def test_transfer_call_tool_rejects_bad_targets(target: str) -> None:
    control = RecordingControl()
    out = await builtin("transfer_call", {"target": target}, control)
    assert out["status"] == "invalid_target" and target in out["error"]
    assert control.actions == []


# --- database: definitions, agents, invocations, sync, checks -----------------------------

pytestmark_db = pytest.mark.django_db


@pytestmark_db
def test_example_project_default_agent_offers_get_time() -> None:
    # Created by project.apps' post_migrate handler when the test database was migrated.
    agent = Agent.objects.get(is_default=True)
    assert agent.slug == "default"
    assert list(agent.tools.values_list("name", flat=True)) == ["get_time"]
    bound = tools_for_agent(agent)
    assert list(bound) == ["get_time"]
    assert bound["get_time"].definition() == {
        "type": "function",
        "name": "get_time",
        "description": "Get the current time.",
        "parameters": {**OBJ, "properties": {}},
    }


@pytestmark_db
def test_tools_for_agent_applies_definitions_and_skips_orphans(caplog: Any) -> None:
    agent = Agent.objects.create(name="Desk", slug="desk")
    end = ToolDefinition.objects.get(name="end_call")
    end.description = "Hang up politely."
    end.timeout_seconds = 3
    end.holding_message = "Hold on."
    end.save()
    transfer = ToolDefinition.objects.get(name="transfer_call")
    transfer.enabled = False
    transfer.save()
    orphan = ToolDefinition.objects.create(name="gone_tool", description="Old.")
    agent.tools.add(end, transfer, orphan)

    caplog.set_level(logging.WARNING, logger="voiceconv.tools")
    bound = tools_for_agent(agent)
    assert list(bound) == ["end_call"]
    assert (bound["end_call"].description, bound["end_call"].timeout,
            bound["end_call"].holding_message) == ("Hang up politely.", 3, "Hold on.")
    assert bound["end_call"].definition_pk == end.pk
    assert "gone_tool" in caplog.text and "not registered" in caplog.text
    assert tools_for_agent(None) == {}


@pytestmark_db
def test_sync_creates_updates_and_keeps_operator_edits(isolated: Any) -> None:
    @tool
    def fresh_tool(city: str) -> str:
        """Say hello."""
        return city

    report = sync_tool_definitions()
    assert report.created == ["fresh_tool"]
    assert {"get_time", "end_call", "transfer_call"} <= set(report.unchanged)
    definition = ToolDefinition.objects.get(name="fresh_tool")
    assert definition.description == definition.code_description == "Say hello."
    assert definition.parameters == registry.get("fresh_tool").parameters  # type: ignore[union-attr]

    # Code changes: an unedited description follows; the schema always follows.
    registry.unregister("fresh_tool")

    @tool(name="fresh_tool")
    def fresh_tool_v2(city: str, days: int = 1) -> str:
        """Say hello twice."""
        return city

    assert sync_tool_definitions().updated == ["fresh_tool"]
    definition.refresh_from_db()
    assert definition.description == "Say hello twice."
    assert "days" in definition.parameters["properties"]

    # An operator's edit survives the next code change.
    definition.description = "Operator wording."
    definition.save()
    registry.unregister("fresh_tool")
    tool(description="Third wording.", name="fresh_tool")(fresh_tool_v2)
    sync_tool_definitions()
    definition.refresh_from_db()
    assert definition.description == "Operator wording."
    assert definition.code_description == "Third wording."

    ToolDefinition.objects.create(name="old_one")
    assert sync_tool_definitions().orphans == ["old_one"]
    assert str(sync_tool_definitions()).splitlines()[-1] == "not registered (orphans): old_one"


@pytestmark_db
def test_sync_command_prints_report() -> None:
    ToolDefinition.objects.create(name="vanished")
    out, err = StringIO(), StringIO()
    call_command("voiceconv_sync_tools", stdout=out, stderr=err)
    unchanged = "unchanged: end_call, get_time, send_dtmf, transfer_call, warm_transfer"
    assert unchanged in out.getvalue()
    assert "not registered (orphans): vanished" in out.getvalue()
    assert "vanished" in err.getvalue()
    ToolDefinition.objects.filter(name="vanished").delete()
    out = StringIO()
    call_command("voiceconv_sync_tools", stdout=out)
    assert "Tool definitions are in sync." in out.getvalue()


@pytestmark_db
def test_definition_clean_and_flags() -> None:
    definition = ToolDefinition.objects.get(name="transfer_call")
    assert definition.is_registered and str(definition) == "transfer_call"
    definition.parameters_override = {"type": "object", "properties": {}}
    with pytest.raises(ValidationError) as info:
        definition.full_clean()
    assert "needs target" in str(info.value.message_dict["parameters_override"])
    definition.parameters_override = {}
    definition.full_clean()
    assert definition.parameters_override is None

    with pytest.raises(ValidationError) as info:
        ToolDefinition(name="not_a_tool").full_clean()
    assert "name" in info.value.message_dict
    orphan = ToolDefinition.objects.create(name="not_a_tool")
    assert not orphan.is_registered
    orphan.full_clean()  # an existing orphan stays editable


@pytestmark_db
def test_system_check_flags_orphans_and_bad_overrides() -> None:
    assert check_tool_definitions() == []
    ToolDefinition.objects.create(name="orphaned_tool")
    ToolDefinition.objects.filter(name="get_time").update(parameters_override={"type": "array"})
    messages = check_tool_definitions()
    assert [(m.id, str(m.obj)) for m in messages] == [
        ("voiceconv.W011", "get_time"), ("voiceconv.W010", "orphaned_tool")
    ]
    assert "orphaned_tool" in messages[1].msg
    assert {m.id for m in run_checks()} >= {"voiceconv.W010", "voiceconv.W011"}


@pytestmark_db
def test_system_check_skips_quietly_without_the_table() -> None:
    from django.db import connection, transaction

    class Undo(Exception):
        pass

    with pytest.raises(Undo), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE voiceconv_tooldefinition RENAME TO voiceconv_td_away")
        assert check_tool_definitions() == []
        raise Undo
    assert ToolDefinition.objects.filter(name="get_time").exists()


@pytestmark_db
def test_invocation_from_result() -> None:
    call = Call.objects.create(twilio_call_sid="CA" + "9" * 32)

    def add(a: int, b: int) -> int:
        return a + b

    result = asyncio.run(run(add, {"a": 2, "b": 3}))
    invocation = ToolInvocation.objects.create(call=call, **result.as_model_fields())
    invocation.refresh_from_db()
    assert (invocation.tool_name, invocation.openai_call_id, invocation.arguments,
            invocation.output, invocation.error) == ("add", "call_1", '{"a": 2, "b": 3}', "5", "")
    assert invocation.started_at == result.started_at and invocation.ok
    assert list(call.tool_invocations.all()) == [invocation]
    assert str(invocation).startswith("add (ok, ")

    failed = asyncio.run(run(add, {"a": "x"}))
    record = ToolInvocation.objects.create(call=None, **failed.as_model_fields())
    assert not record.ok and record.error.startswith("Invalid arguments for add")


def test_registry_imports_no_models_and_models_import_it_at_module_level() -> None:
    # A fresh interpreter without Django set up: declaring tools must not need the app registry.
    code = (
        "import sys\n"
        "from voiceconv import tool\n"
        "import voiceconv.tools.registry as r\n"
        "assert tool is r.tool\n"
        "assert 'end_call' in r.registry and 'transfer_call' in r.registry\n"
        "assert not [m for m in sys.modules if m.startswith('voiceconv.models')], sys.modules\n"
    )
    done = run_without_django(code)
    assert done.returncode == 0, done.stderr
    # models/tools.py reaches the registry through a module-level import, not a hidden one.
    tree = ast.parse(Path(voiceconv.models.tools.__file__).read_text())
    top = {
        node.module for node in tree.body if isinstance(node, ast.ImportFrom) and node.module
    }
    assert "voiceconv.tools.registry" in top
    nested = [
        node for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef)
        for node in ast.walk(fn) if isinstance(node, ast.Import | ast.ImportFrom)
    ]
    assert nested == []
