"""Rule 5 end to end: every turn-detection configuration either works or is refused.

``create_response: false``: the bridge asks for the answer after the caller's turn itself.
``interrupt_response: false``: the agent cannot be interrupted (no clear, truncate or cancel).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from tests.conftest import ROOT, server_env
from tests.e2e import enter_call, eventually
from voiceconv.testing import RealtimeStandIn, ScriptedResponse, ServerProcess, silence, speech_like

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("hang_up_leftovers"),
]


@pytest.fixture(scope="module")
def manual_turns_server(
    django_db_setup: None, django_db_blocker: pytest.FixtureRequest, standin_port: int
) -> Iterator[ServerProcess]:
    """Server VAD that neither answers nor interrupts by itself."""
    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        env = server_env(
            standin_port,
            TURN_DETECTION={
                "type": "server_vad",
                "create_response": False,
                "interrupt_response": False,
            },
        )
    with ServerProcess(env=env, cwd=ROOT) as server:
        yield server


async def test_with_create_response_false_the_bridge_asks_for_the_answer(
    manual_turns_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    standin.responses.append(ScriptedResponse(text="Hello, how can I help?"))
    standin.responses.append(ScriptedResponse(text="It ships on Monday."))
    client = await enter_call(manual_turns_server)
    session = await standin.wait_for_session(0, timeout=10)
    update = await session.expect_event("session.update", timeout=10)
    td = update["session"]["audio"]["input"]["turn_detection"]
    assert td["create_response"] is False  # the configuration reached the session as set
    await session.expect_event("response.create", timeout=10)  # the greeting
    await eventually(lambda: "response.done" in session.sent_types(), timeout=10)
    await client.send_silence(2000)
    await client.send_audio(speech_like(800) + silence(800))
    await eventually(lambda: "input_audio_buffer.committed" in session.sent_types(), timeout=10)
    # No silent agent: the bridge requests the answer after the caller's turn.
    await session.expect_event("response.create", timeout=10)
    await eventually(lambda: session.sent_types().count("response.done") >= 2, timeout=10)
    answer = [e for e in session.sent if e["type"] == "response.done"][-1]["response"]
    answer_id = answer["output"][0]["id"]
    answer_bytes = sum(
        len(base64.b64decode(b)) for _, i, b in session.sent_deltas if i == answer_id
    )
    assert answer_bytes > 0
    total = sum(len(base64.b64decode(b)) for _, _, b in session.sent_deltas)
    await client.wait_for_media(total, timeout=10)  # the caller receives the answer
    await client.hang_up()


async def test_with_interrupt_response_false_the_agent_is_not_interrupted(
    manual_turns_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    long_answer = "This is a long announcement that the caller cannot interrupt at all."
    standin.responses.append(ScriptedResponse(text=long_answer, audio_ms=5000))
    client = await enter_call(manual_turns_server, realtime=True)
    session = await standin.wait_for_session(0, timeout=10)
    await session.expect_event("response.create", timeout=10)
    await eventually(lambda: "response.done" in session.sent_types(), timeout=10)
    await client.send_silence(1000)
    await client.send_audio(speech_like(600))  # the caller talks over the agent
    await client.send_silence(4500)
    kinds = [e["type"] for e in session.received]
    assert "conversation.item.truncate" not in kinds
    assert "response.cancel" not in kinds
    assert client.clear_records == []
    assert [m.dropped for m in client.media_records if m.dropped] == []
    first = next(e for e in session.sent if e["type"] == "response.done")["response"]
    first_id = first["output"][0]["id"]
    announcement = sum(len(base64.b64decode(b)) for _, i, b in session.sent_deltas if i == first_id)
    assert first["status"] == "completed"
    assert len(client.heard) >= announcement  # heard to the end
    await client.hang_up()
