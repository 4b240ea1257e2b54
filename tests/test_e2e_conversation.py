"""Conversations as they really go, end to end: the example project under daphne, the real
openai SDK, the Realtime stand-in playing the live service's dynamics, the Twilio stream client.

Rules 2 (reconnect restores the conversation) and 3 (several items per response) of the call
core, on the shared server of ``tests/conftest.py``.
"""

from __future__ import annotations

import base64

import pytest
from asgiref.sync import sync_to_async

from tests.e2e import enter_call, eventually, wait_for_call
from voiceconv.testing import (
    RealtimeStandIn,
    ScriptedResponse,
    StandInSession,
    TwilioStreamClient,
    silence,
    speech_like,
)
from voiceconv.testing.server import ServerProcess

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("hang_up_leftovers"),
]

GREETING = "Hello, how can I help?"
QUESTION = "When does my order ship?"
ANSWER = "Your order ships on Monday morning by courier, and you will get a text with the link."


def seeded(session: StandInSession) -> list[tuple[str, str]]:
    """``(role or type, text)`` of every item the bridge created in ``session``, in order."""
    out: list[tuple[str, str]] = []
    for event in session.received:
        if event["type"] != "conversation.item.create":
            continue
        item = event["item"]
        if item.get("type") == "message":
            content = item.get("content") or [{}]
            out.append((item["role"], content[0].get("text") or content[0].get("transcript") or ""))
        else:
            out.append((item["type"], item.get("name") or item.get("output") or ""))
    return out


async def greeted_and_asked(server: ServerProcess, standin: RealtimeStandIn) -> tuple[
    TwilioStreamClient, StandInSession
]:
    """A call (real-time caller clock) that heard the greeting and is about to ask
    ``QUESTION``; responses the test scripted before follow the greeting."""
    standin.responses.appendleft(ScriptedResponse(text=GREETING))
    standin.caller_transcripts.appendleft(QUESTION)
    client = await enter_call(server, realtime=True)
    session = await standin.wait_for_session(0, timeout=10)
    await session.expect_event("response.create", timeout=10)
    await eventually(lambda: "response.done" in session.sent_types(), timeout=10)
    await client.send_silence(60 * len(GREETING) + 300)  # the greeting plays to the end
    return client, session


# ---------------------------------------------------------------- rule 2: reconnect restores


async def test_reconnect_keeps_every_turn_in_order(
    e2e_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    standin.responses.append(ScriptedResponse(text="It ships on Monday."))
    standin.responses.append(ScriptedResponse(text="Yes, by courier."))
    standin.caller_transcripts.append("Is it by courier?")
    client, first = await greeted_and_asked(e2e_server, standin)
    for count in (2, 3):
        await client.send_audio(speech_like(800) + silence(700))
        await eventually(
            lambda n=count: first.sent_types().count("response.done") >= n,  # type: ignore[misc]
            timeout=10,
        )
        await client.send_silence(2000)
    await first.drop()
    second = await standin.wait_for_session(1, timeout=15)
    await eventually(lambda: len(seeded(second)) >= 5, timeout=10)
    assert seeded(second) == [
        ("assistant", GREETING),
        ("user", QUESTION),
        ("assistant", "It ships on Monday."),
        ("user", "Is it by courier?"),
        ("assistant", "Yes, by courier."),
    ]
    assert not second.response_requests  # everything was answered: nothing to say again


# ------------------------------------------------------------- rule 3: several items per response


async def test_items_of_one_response_play_in_order_and_barge_in_truncates_the_playing_one(
    e2e_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    preamble = "One moment."
    preamble_ms = 60 * len(preamble)
    standin.responses.append(ScriptedResponse(preamble=preamble, text=ANSWER, audio_ms=8000))
    client, session = await greeted_and_asked(e2e_server, standin)
    await client.send_audio(speech_like(800) + silence(700))
    await eventually(lambda: session.sent_types().count("response.done") >= 2, timeout=10)
    done = [e for e in session.sent if e["type"] == "response.done"][-1]["response"]
    preamble_id, answer_id = (o["id"] for o in done["output"])
    # Every delta of both items reached the caller, in order, byte-identical.
    await client.wait_for(
        lambda: len(client.received_media) >= len(session.sent_deltas), timeout=10
    )
    assert [d for _, _, d in session.sent_deltas] == [p for _, p in client.received_media]
    await client.send_silence(preamble_ms + 1500)  # the preamble, then 1.5 s of the answer
    await client.send_audio(speech_like(400))
    await client.expect_event("clear", timeout=5)
    truncate = await session.expect_event("conversation.item.truncate", timeout=5)
    assert truncate["item_id"] == answer_id, (truncate, preamble_id)
    # Everything before the answer item (greeting, preamble) was heard whole.
    before = sum(
        len(base64.b64decode(d)) for _, item, d in session.sent_deltas if item != answer_id
    )
    heard_of_answer = (client.clear_records[0].run_played - before) / 8
    assert abs(truncate["audio_end_ms"] - heard_of_answer) <= 60, (truncate, heard_of_answer)
    assert session.truncates[-1][2] is True
    await client.hang_up()
    call = await wait_for_call(client.call_sid, ended=True)
    entries = await sync_to_async(list)(call.transcript_entries.filter(role="assistant"))
    texts = [e.text for e in entries]
    assert preamble in texts, texts
    answer = next(e for e in entries if ANSWER.startswith(e.text[:10]) and e.text != GREETING)
    assert answer.interrupted
    assert not next(e for e in entries if e.text == preamble).interrupted
