"""Rule 2 end to end: after a drop, the new session holds the conversation as the caller
experienced it, and a question the drop left unanswered is answered."""

from __future__ import annotations

import contextlib

import pytest

from tests.e2e import eventually
from tests.test_e2e_conversation import ANSWER, GREETING, QUESTION, greeted_and_asked, seeded
from voiceconv.testing import (
    RealtimeStandIn,
    ScriptedResponse,
    silence,
    speech_like,
)
from voiceconv.testing.server import ServerProcess

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("hang_up_leftovers"),
]


async def test_reconnect_restores_an_answer_still_playing_as_heard_so_far(
    e2e_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    standin.responses.append(ScriptedResponse(text=ANSWER, audio_ms=8000))
    client, first = await greeted_and_asked(e2e_server, standin)
    await client.send_audio(speech_like(800) + silence(700))
    await eventually(lambda: first.sent_types().count("response.done") >= 2, timeout=10)
    await client.send_silence(2000)  # about 2 s of the 8 s answer heard
    await first.drop()
    second = await standin.wait_for_session(1, timeout=15)
    await second.expect_event("session.update", timeout=10)
    with contextlib.suppress(AssertionError):
        await eventually(lambda: len(seeded(second)) >= 3, timeout=10)
    items = seeded(second)
    assert len(items) >= 3, items
    assert items[:2] == [("assistant", GREETING), ("user", QUESTION)], items
    role, heard = items[2]
    assert role == "assistant"
    # As heard so far: the unheard tail left out.
    assert heard and ANSWER.startswith(heard) and heard != ANSWER, items
    assert second.protocol_violations == []
    assert not client.closed.is_set()


async def test_reconnect_answers_a_question_the_drop_left_unanswered(
    e2e_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    client, first = await greeted_and_asked(e2e_server, standin)
    first.drop_after("input_audio_buffer.committed")  # between the question and the answer
    standin.responses.append(ScriptedResponse(text="It ships on Monday."))
    await client.send_audio(speech_like(800) + silence(700))
    second = await standin.wait_for_session(1, timeout=15)
    await second.expect_event("session.update", timeout=10)
    for _ in range(100):  # the caller waits, silent, for the answer
        if "response.done" in second.sent_types():
            break
        await client.send_silence(50)
    # The new session is asked for a response without the caller having to speak again,
    # and it is not a second greeting.
    assert second.response_requests, "no response.create after the reconnect"
    assert not any("Greet" in (r.get("instructions") or "") for r in second.response_requests)
    assert "response.done" in second.sent_types()
    await client.hang_up()
