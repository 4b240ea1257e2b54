"""Time to first audio per turn, end to end: the example project under daphne, the real openai
SDK, the Realtime stand-in as OpenAI and the Twilio stream client as Twilio.

Every assistant turn of the call gets the bridge's share; the answer to the caller also its
time to first audio from ``speech_stopped`` and the model's share. The figures are what the
server's clock read: the test checks they are there and add up, never how large they are.
"""

from __future__ import annotations

import base64
import json

import pytest
from asgiref.sync import sync_to_async

from tests.e2e import enter_call, eventually, wait_for_call
from voiceconv.testing import RealtimeStandIn, ScriptedResponse, silence, speech_like
from voiceconv.testing.server import ServerProcess

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("hang_up_leftovers"),
]

GREETING = "Hello, thanks for calling."
ANSWER = "Your order ships tomorrow."


async def test_every_turn_of_a_call_is_timed_and_exported(
    e2e_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    from voiceconv.models import TranscriptEntry
    from voiceconv.transcripts import entries_as_jsonl

    standin.responses.extend([ScriptedResponse(text=GREETING), ScriptedResponse(text=ANSWER)])
    standin.caller_transcripts.append("when does my order ship")
    client = await enter_call(e2e_server)
    await client.send_silence(100)
    session = await standin.wait_for_session(0, timeout=10)
    await session.expect_event("response.create", timeout=10)
    await client.send_silence(200)
    await eventually(lambda: any(e["type"] == "response.done" for e in session.sent), 10)
    greeting_audio = sum(len(base64.b64decode(d)) for _, _, d in session.sent_deltas)
    await client.wait_for_media(greeting_audio, timeout=10)
    await client.send_silence(greeting_audio // 8 + 200)
    # The caller speaks, then is silent: speech_stopped, and the answer.
    await client.send_audio(speech_like(800))
    await client.send_audio(silence(900))
    await eventually(lambda: sum(e["type"] == "response.done" for e in session.sent) >= 2, 10)
    assert any(e["type"] == "input_audio_buffer.speech_stopped" for e in session.sent)
    await client.send_silence(3000)
    await client.hang_up()

    call = await wait_for_call(client.call_sid, ended=True)
    entries = await sync_to_async(list)(call.transcript_entries.filter(role="assistant")
                                        .order_by("sequence"))
    greeting = next(e for e in entries if e.text == GREETING)
    answer = next(e for e in entries if e.text == ANSWER)
    # The greeting answers no one: the bridge's share only.
    assert greeting.bridge_ms is not None and greeting.bridge_ms >= 0
    assert greeting.first_audio_ms is None and greeting.model_ms is None
    # The answer: from speech_stopped, split into the model's share and the bridge's.
    assert answer.first_audio_ms is not None and answer.model_ms is not None
    assert answer.bridge_ms is not None
    assert answer.model_ms >= 0 and answer.bridge_ms >= 0
    assert answer.first_audio_ms == pytest.approx(answer.model_ms + answer.bridge_ms, abs=0.05)
    assert answer.latency_ms is not None  # the call-clock latency, as before

    # Exported with the transcript.
    exported_text = await sync_to_async(entries_as_jsonl)(
        TranscriptEntry.objects.filter(call=call, role="assistant"))
    rows = [json.loads(line) for line in exported_text.splitlines()]
    exported = next(r for r in rows if r["text"] == ANSWER)
    assert (exported["first_audio_ms"], exported["model_ms"], exported["bridge_ms"]) == (
        answer.first_audio_ms, answer.model_ms, answer.bridge_ms)
