"""Rule 2 end to end, with a tool: a drop while a tool runs loses neither the call nor the
output, and the tool is never run twice."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from asgiref.sync import sync_to_async

from tests.conftest import ROOT, server_env
from tests.e2e import enter_call, eventually, wait_for_call
from tests.test_e2e_conversation import seeded
from voiceconv.testing import (
    RealtimeStandIn,
    ScriptedFunctionCall,
    ScriptedResponse,
    ServerProcess,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("hang_up_leftovers"),
]


@pytest.fixture(scope="module")
def tool_server(
    django_db_setup: None, django_db_blocker: pytest.FixtureRequest, standin_port: int
) -> Iterator[ServerProcess]:
    """The example project with the test app's slow (2 s) tool."""
    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        env = server_env(standin_port, TOOL_HOLDING_DELAY=5)
    env["EXTRA_INSTALLED_APPS"] = "tests.toolapp"
    with ServerProcess(env=env, cwd=ROOT) as server:
        yield server


def offer_lookup() -> None:
    from voiceconv.models import Agent, ToolDefinition

    agent = Agent.objects.get(is_default=True)
    agent.tools.set([ToolDefinition.objects.get_or_create(name="slow_lookup")[0]])


async def test_a_drop_while_a_tool_runs_keeps_its_output_and_runs_it_once(
    tool_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    await sync_to_async(offer_lookup)()
    standin.responses.append(
        ScriptedResponse(
            text="",
            function_calls=[
                ScriptedFunctionCall("slow_lookup", {"order_id": "A17"}, call_id="call_A17")
            ],
        )
    )
    standin.responses.append(ScriptedResponse(text="Your order A17 has shipped."))
    client = await enter_call(tool_server)
    first = await standin.wait_for_session(0, timeout=10)
    first.drop_after("response.done")  # the tool starts; the socket drops while it runs
    second = await standin.wait_for_session(1, timeout=15)
    for _ in range(200):
        if "response.done" in second.sent_types():
            break
        await client.send_silence(50)
        await asyncio.sleep(0.01)
    items = seeded(second)
    kinds = [kind for kind, _ in items]
    # The new session knows the call and its output (so the model does not ask again)...
    assert "function_call" in kinds and "function_call_output" in kinds, items
    assert kinds.index("function_call") < kinds.index("function_call_output")
    # ... and is asked to answer with it.
    assert second.response_requests, "no response after the tool's output"
    await eventually(lambda: "response.done" in second.sent_types(), timeout=10)
    await client.hang_up()
    call = await wait_for_call(client.call_sid, ended=True)
    runs = await sync_to_async(list)(call.tool_invocations.filter(tool_name="slow_lookup"))
    assert len(runs) == 1, [(r.openai_call_id, r.output) for r in runs]
    assert "shipped" in runs[0].output


async def test_a_call_hung_up_while_a_tool_runs_records_the_invocation_as_cancelled(
    tool_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    """Rule 6: the caller hangs up during an 8 s tool; its invocation is still recorded."""

    def offer_stuck_lookup() -> None:
        from voiceconv.models import Agent, ToolDefinition

        agent = Agent.objects.get(is_default=True)
        agent.tools.set([ToolDefinition.objects.get_or_create(name="stuck_lookup")[0]])

    await sync_to_async(offer_stuck_lookup)()
    standin.responses.append(
        ScriptedResponse(
            text="",
            function_calls=[
                ScriptedFunctionCall("stuck_lookup", {"order_id": "B2"}, call_id="call_B2")
            ],
        )
    )
    client = await enter_call(tool_server)
    session = await standin.wait_for_session(0, timeout=10)
    await eventually(lambda: "running stuck_lookup (call_B2)" in tool_server.log_text(),
                     timeout=15)
    await client.hang_up()  # while the tool runs
    call = await wait_for_call(client.call_sid, ended=True, timeout=15)
    runs = await sync_to_async(list)(call.tool_invocations.all())
    assert [(r.tool_name, r.openai_call_id, r.error) for r in runs] == [
        ("stuck_lookup", "call_B2", "cancelled")]
    assert "cancelled" in runs[0].output
    entries = await sync_to_async(list)(call.transcript_entries.filter(role="tool"))
    assert len(entries) == 1 and "cancelled" in entries[0].text, [e.text for e in entries]
    # nothing of the cut-short call reached OpenAI as if it had an output
    assert not [e for e in session.received if e["type"] == "conversation.item.create"
                and e["item"].get("type") == "function_call_output"]
