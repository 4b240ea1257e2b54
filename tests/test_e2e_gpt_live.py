"""A GPT-Live call end to end: the example project under daphne, the real openai SDK's
``client.live.connect`` reaching the GPT-Live stand-in, the Twilio stream client as Twilio."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from array import array
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from asgiref.sync import sync_to_async

from tests.conftest import AUTH_TOKEN, OPENAI_KEY, PUBLIC_URL, ROOT, server_env, write_pcm_wav
from tests.e2e import CALLER, NUMBER, OPEN, enter_call, eventually, track, wait_for_call
from voiceconv.pricing import session_cost
from voiceconv.session.live_side import CLIP_EVENT_ID
from voiceconv.testing import (
    GPTLiveStandIn,
    ScriptedDelegation,
    ScriptedLiveAnswer,
    TwilioStreamClient,
    free_port,
    silence,
    speech_like,
    ulaw_decode,
)
from voiceconv.testing.live_server.speech import fixture_to_ulaw
from voiceconv.testing.server import ServerProcess
from voiceconv.transcripts import entry_as_dict

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

GREETING = "Hello, you are through to the shop."
ANSWER = "It is a quarter past ten."
STORY = "Once upon a time there was a very long story " * 4
CLIP_TEXT = "This call is recorded for quality and training."


def clip_pcm() -> bytes:
    """3 s of speech-like PCM16 at 24 kHz (each 8 kHz sample three times)."""
    narrow = array("h")
    narrow.frombytes(ulaw_decode(speech_like(3000, seed=21)))
    return array("h", (v for v in narrow for _ in range(3))).tobytes()


@pytest.fixture(scope="module")
def live_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def gpt_live_server(
    django_db_setup: None, django_db_blocker: pytest.FixtureRequest, live_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerProcess]:
    """The example project, its OpenAI side (OPENAI_BASE_URL) at the GPT-Live stand-in, with
    one recorded clip (``notice``)."""
    path = write_pcm_wav(tmp_path_factory.mktemp("clips") / "notice.wav", clip_pcm())
    clips = {"notice": {"path": str(path), "text": CLIP_TEXT}}
    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        env = server_env(live_port, CLIPS=clips)
    with ServerProcess(env=env, cwd=ROOT) as server:
        yield server


@pytest.fixture
async def live(live_port: int) -> AsyncIterator[GPTLiveStandIn]:
    async with GPTLiveStandIn(port=live_port, api_key=OPENAI_KEY) as s:
        yield s
        for client in OPEN:
            with contextlib.suppress(Exception):
                await client.hang_up()
        OPEN.clear()


async def talk_until(client: TwilioStreamClient, predicate: Callable[[], bool],
                     timeout: float = 10.0) -> None:
    """Let call time pass (caller silence, as a phone line always sends) until ``predicate``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s of call time passing")
        await client.send_silence(100)
        await asyncio.sleep(0.01)


def live_agent(*tools: str, opening_clip: str = "") -> None:
    from voiceconv.models import Agent, ToolDefinition

    agent = Agent.objects.get(is_default=True)
    agent.backend = Agent.Backend.GPT_LIVE
    agent.model = ""
    agent.opening_clip = opening_clip
    agent.greeting = "Greet the caller."
    agent.save()
    agent.tools.set([ToolDefinition.objects.get_or_create(name=n)[0] for n in tools])


async def test_a_gpt_live_call_end_to_end(
    gpt_live_server: ServerProcess, live: GPTLiveStandIn
) -> None:
    await sync_to_async(live_agent)("get_time")
    greeting_audio = speech_like(1200, seed=11)
    answer_audio = speech_like(900, seed=12)
    live.answers.extend([
        ScriptedLiveAnswer(GREETING, audio=greeting_audio),
        ScriptedLiveAnswer(delegate=ScriptedDelegation("get_time", {}, "call_time")),
        ScriptedLiveAnswer(ANSWER, audio=answer_audio),
        ScriptedLiveAnswer(STORY, audio_ms=10000),
        ScriptedLiveAnswer("Of course, stopping.", audio_ms=600),
    ])
    live.caller_transcripts.extend(["what time is it", "tell me a story", "stop please"])
    # Real time: barge-in is a race between the caller's words and what Twilio still plays.
    client = await enter_call(gpt_live_server, realtime=True)
    await client.send_silence(100)
    session = await live.wait_for_session(0, timeout=10)

    # session.start first: the model, μ-law at 8 kHz, the voice, the tools delegated.
    await talk_until(client, lambda: session.config is not None)
    start = session.received[0]
    assert start["type"] == "session.start"
    cfg = start["session"]
    assert cfg["model"] == "gpt-live-1"
    assert cfg["audio"]["format"] == {"type": "audio/pcmu", "rate": 8000}
    assert cfg["audio"]["output"]["voice"]
    assert cfg["delegation"]["type"] == "responses"
    assert [t["name"] for t in cfg["delegation"]["responses"]["tools"]] == ["get_time"]
    # The greeting is commentary.
    await eventually(lambda: session.commentary == ["Greet the caller."], timeout=5)

    # The greeting reaches the caller; the caller listens, then asks for the time.
    await talk_until(client, lambda: client.received_bytes >= len(greeting_audio))
    await client.send_silence(1500)
    await client.send_audio(speech_like(700, seed=1))
    await client.send_audio(silence(700))
    # The delegated function call ran here and was answered; the answer is spoken.
    await talk_until(client, lambda: session.tool_outputs != [])
    (call_id, output), = session.tool_outputs
    assert call_id == "call_time" and set(json.loads(output)) == {"time"}
    await talk_until(
        client, lambda: client.received_bytes >= len(greeting_audio) + len(answer_audio))
    await client.send_silence(1200)

    # The caller asks for a story and barges in over it: Twilio is cleared.
    await client.send_audio(speech_like(600, seed=2))
    await client.send_audio(silence(600))
    await talk_until(client, lambda: len(session.output_audio) > len(greeting_audio)
                     + len(answer_audio) + 8000)
    await client.send_silence(300)
    await client.send_audio(speech_like(600, seed=3))
    await client.send_audio(silence(700))
    clear = await client.expect_event("clear", timeout=10)
    assert clear["streamSid"] == client.stream_sid
    assert len(session.interruptions) == 1
    # What the clear kept the caller from hearing: the lead the model streams ahead, less
    # the time its first transcript fragment took (lead_ms - transcript_delay_ms at most).
    dropped_ms = client.clear_records[0].dropped_bytes / 8
    assert 0 < dropped_ms <= live.lead_ms
    assert not any(e["type"] == "conversation.item.truncate" for e in session.received)
    await talk_until(client, lambda: session.sent[-1]["type"] == "session.usage.updated")
    await client.send_silence(1500)

    # Audio both ways, byte for byte and in order.
    await eventually(lambda: len(session.input_audio) >= 8 * 20 * len(client.sent_frames))
    sent = b"".join(base64.b64decode(b) for _, b in client.sent_frames)
    assert bytes(session.input_audio) == sent
    received = b"".join(base64.b64decode(p) for _, p in client.received_media)
    assert received == bytes(session.output_audio)
    assert received.startswith(greeting_audio + answer_audio)
    assert session.protocol_violations == []
    assert client.violations == []

    await client.hang_up()
    call = await wait_for_call(client.call_sid, ended=True)
    assert call.status == "completed" and call.model == "gpt-live-1"
    # Usage in seconds: the final total of session.closed, after session.close on hang-up.
    assert any(e["type"] == "session.close" for e in session.received)
    closed = next(e for e in session.sent if e["type"] == "session.closed")
    assert call.session_seconds == closed["usage"]["seconds"] > 0
    # Priced from those seconds (no split reported: all at the active rate), per minute too.
    assert call.estimated_cost == session_cost("gpt-live-1", call.session_seconds) > 0
    assert call.cost_per_minute is not None and call.cost_per_minute > 0
    entries = await sync_to_async(list)(call.transcript_entries.order_by("sequence"))
    roles = [(e.role, e.text) for e in entries]
    # Turns built from the timed fragments, one per speaker turn.
    assert ("assistant", GREETING) in roles
    assert ("caller", "what time is it") in roles
    assert ("assistant", ANSWER) in roles
    assert ("caller", "tell me a story") in roles
    assert ("caller", "stop please") in roles
    tool = next(e for e in entries if e.role == "tool")
    assert tool.text.startswith("get_time(")
    story = next(e for e in entries if e.role == "assistant" and e.text.startswith("Once"))
    assert story.interrupted and story.heard_ms is not None
    assert 0 < story.heard_ms < story.total_ms
    invocation = await call.tool_invocations.afirst()
    assert invocation.tool_name == "get_time"
    # Time to first audio per turn: GPT-Live has no speech_stopped, so an answer is timed from
    # the last caller fragment before it (CALLER_STOPPED_IS_LAST_FRAGMENT); every assistant
    # turn, the greeting too, has the bridge's share.
    greeting = next(e for e in entries if e.role == "assistant" and e.text == GREETING)
    assert greeting.bridge_ms is not None and greeting.model_ms is None
    answer = next(e for e in entries if e.role == "assistant" and e.text == ANSWER)
    assert None not in (answer.first_audio_ms, answer.model_ms, answer.bridge_ms)
    assert answer.first_audio_ms == pytest.approx(answer.model_ms + answer.bridge_ms, abs=0.05)
    # The export carries the cost.
    exported = await sync_to_async(entry_as_dict)(entries[0])
    assert exported["call_cost"]["estimated_cost_usd"] == str(call.estimated_cost)
    assert exported["call_cost"]["session_seconds"] == call.session_seconds


async def test_an_opening_clip_plays_word_for_word_before_the_greeting(
    gpt_live_server: ServerProcess, live: GPTLiveStandIn
) -> None:
    await sync_to_async(live_agent)(opening_clip="notice")
    greeting_audio = speech_like(800, seed=13)
    live.answers.append(ScriptedLiveAnswer(GREETING, audio=greeting_audio))
    live.caller_transcripts.append("hello is anyone there")
    clip_audio = fixture_to_ulaw(clip_pcm())
    client = await enter_call(gpt_live_server)
    await client.send_silence(100)
    session = await live.wait_for_session(0, timeout=10)
    await talk_until(client, lambda: session.fixtures != [])
    # The caller talks over the clip: its input is muted, so this is no barge-in.
    await client.send_audio(speech_like(500, seed=7))
    await talk_until(
        client, lambda: client.received_bytes >= len(clip_audio) + len(greeting_audio),
        timeout=30)
    await client.wait_for_playback()  # the caller hears all of it

    sent = [e for e in session.received if e["type"] != "session.start"]
    play, described, greeting = sent[:3]
    assert play["type"] == "session.output_audio.fixture.play"
    assert play["event_id"] == CLIP_EVENT_ID and base64.b64decode(play["audio"]) == clip_pcm()
    assert described == {"type": "session.instructions.append", "delegation_id": None,
                         "content": f"[The caller has just heard this recorded message: "
                                    f"{CLIP_TEXT}]"}
    assert greeting["type"] == "session.commentary.append"  # only once the clip had played
    types = [e["type"] for e in session.sent]
    playing = types.index("session.output_audio.fixture.playing")
    assert playing < types.index("session.output_audio.fixture.played")
    received = b"".join(base64.b64decode(p) for _, p in client.received_media)
    assert received.startswith(clip_audio + greeting_audio)
    assert session.interruptions == [] and client.clear_records == []
    assert session.protocol_violations == [] and client.violations == []

    await client.hang_up()
    call = await wait_for_call(client.call_sid, ended=True)
    entries = await sync_to_async(list)(call.transcript_entries.order_by("sequence"))
    spoken = [(e.role, e.text) for e in entries if e.role == "assistant"]
    assert spoken[:2] == [("assistant", CLIP_TEXT), ("assistant", GREETING)]
    clip_entry = next(e for e in entries if e.text == CLIP_TEXT)
    assert clip_entry.total_ms == len(clip_audio) // 8 and not clip_entry.interrupted
    assert not any(e.role == "caller" for e in entries)  # dropped while the clip played
    assert call.estimated_cost > 0


async def test_gpt_live_refusing_session_start_ends_the_call_with_the_apology(
    gpt_live_server: ServerProcess, live: GPTLiveStandIn
) -> None:
    await sync_to_async(live_agent)()
    live.start_error = "invalid_api_key"
    client = await enter_call(gpt_live_server)
    await client.send_silence(200)
    code = await client.wait_closed(timeout=15)  # the apology plays first
    assert code is not None
    assert client.received_bytes > 8000  # the spoken apology
    call = await wait_for_call(client.call_sid, ended=True)
    assert call.end_reason == "openai_error"
    assert "invalid_api_key" in call.error


async def test_a_dropped_gpt_live_session_is_replaced_with_the_conversation_so_far(
    gpt_live_server: ServerProcess, live: GPTLiveStandIn
) -> None:
    await sync_to_async(live_agent)()
    live.answers.extend([
        ScriptedLiveAnswer(GREETING, audio_ms=600),
        ScriptedLiveAnswer("Let me explain at length", audio_ms=3000, drop_after_ms=500),
        ScriptedLiveAnswer("Sorry, where was I.", audio_ms=600),
    ])
    live.caller_transcripts.append("my name is Ada")
    client = await enter_call(gpt_live_server)
    first = await live.wait_for_session(0, timeout=10)
    await talk_until(client, lambda: client.received_bytes >= 600 * 8)
    await client.send_silence(800)
    await client.send_audio(speech_like(600, seed=4))
    await client.send_audio(silence(600))
    await talk_until(client, lambda: first.closed.is_set())
    second = await live.wait_for_session(1, timeout=10)
    await talk_until(client, lambda: second.config is not None)
    history = second.received[0]["session"]["input"]
    texts = [(i["role"], i["content"][0]["text"]) for i in history]
    assert ("assistant", GREETING) in texts
    assert ("user", "my name is Ada") in texts
    assert first.protocol_violations == [] and second.protocol_violations == []
    await client.hang_up()
    call = await wait_for_call(client.call_sid, ended=True)
    assert call.end_reason == "caller_hung_up"


async def test_a_gpt_live_agent_pre_connects_while_the_phone_rings(
    gpt_live_server: ServerProcess, live: GPTLiveStandIn
) -> None:
    from voiceconv.models import Agent  # the models need the app registry, set up by then

    await sync_to_async(live_agent)()
    await Agent.objects.filter(is_default=True).aupdate(preconnect=True)
    live.answers.append(ScriptedLiveAnswer(GREETING, audio_ms=600))
    client = track(await TwilioStreamClient.from_webhook(
        gpt_live_server.http_url, auth_token=AUTH_TOKEN, public_url=PUBLIC_URL,
        form={"From": CALLER, "To": NUMBER}, realtime=False))
    # Ringing: session.start is sent before any stream exists; no greeting yet.
    session = await live.wait_for_session(0, timeout=10)
    await eventually(lambda: session.config is not None, timeout=10)
    assert session.received[0]["type"] == "session.start"
    assert session.commentary == []
    await client.start_call()
    await talk_until(client, lambda: client.received_bytes >= 600 * 8)
    assert session.commentary == ["Greet the caller."]
    assert len(live.sessions) == 1  # the stream adopted it
    assert [e["type"] for e in session.received].count("session.start") == 1
    await client.hang_up()
    call = await wait_for_call(client.call_sid, ended=True)
    greeting = await call.transcript_entries.filter(role="assistant").afirst()
    assert greeting is not None and greeting.text == GREETING
