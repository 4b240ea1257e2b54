"""The GPT-Live stand-in, reached through the real ``openai`` SDK (``client.live.connect``)."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from array import array
from typing import Any

import pytest
import websockets
from openai import AsyncOpenAI

from voiceconv.testing import (
    GPTLiveStandIn,
    ScriptedDelegation,
    ScriptedFragment,
    ScriptedFunctionCall,
    ScriptedLiveAnswer,
    silence,
    speech_like,
    validate_live_client_event,
)
from voiceconv.testing.live_server.cli import build_parser
from voiceconv.testing.live_server.speech import FIXTURE_MAX_BYTES, fixture_to_ulaw

pytestmark = pytest.mark.asyncio

START = {
    "type": "session.start",
    "session": {
        "model": "gpt-live-1",
        "instructions": "Be brief.",
        "audio": {"format": {"type": "audio/pcmu", "rate": 8000}, "output": {"voice": "marin"}},
    },
}


GREET = {"type": "session.commentary.append", "content": "Greet.", "delegation_id": None}


async def send_audio(conn: Any, payload: bytes) -> None:
    """Caller audio in 20 ms appends."""
    for i in range(0, len(payload), 160):
        await conn.send({"type": "session.input_audio.append",
                         "audio": base64.b64encode(payload[i:i + 160]).decode()})


async def until(conn: Any, etype: str, seen: list[Any], timeout: float = 10.0) -> Any:
    async def loop() -> Any:
        while True:
            event = await conn.recv()
            seen.append(event)
            if event.type == etype:
                return event

    return await asyncio.wait_for(loop(), timeout)


async def test_start_audio_out_and_transcript_fragments() -> None:
    audio = speech_like(600, seed=3)
    async with GPTLiveStandIn(answers=[ScriptedLiveAnswer("Hi there friend", audio=audio)]) as s:
        client = AsyncOpenAI(api_key="sk-test", base_url=s.base_url)
        async with client.live.connect() as conn:
            await conn.send(START)  # type: ignore[arg-type]
            seen: list[Any] = []
            started = await until(conn, "session.started", seen)
            assert started.session.model == "gpt-live-1"
            await conn.send({"type": "session.commentary.append", "content": "Greet.",
                             "delegation_id": None})
            await until(conn, "session.usage.updated", seen)
        got = b"".join(base64.b64decode(e.delta) for e in seen
                       if e.type == "session.output_audio.delta")
        assert got == audio
        words = [e for e in seen if e.type == "session.output_transcript.delta"]
        assert "".join(w.delta for w in words) == "Hi there friend"
        assert all(w.start_ms <= w.end_ms for w in words)
        session = s.sessions[0]
        assert session.protocol_violations == []
        assert s.handshakes[0]["path"] == "/v1/live/sessions"


async def test_caller_speech_interrupts_and_is_transcribed() -> None:
    answers = [ScriptedLiveAnswer("a long answer " * 10, audio_ms=8000),
               ScriptedLiveAnswer("Sure.")]
    async with GPTLiveStandIn(answers=answers, caller_transcripts=["stop please"],
                              lead_ms=500) as s:
        client = AsyncOpenAI(api_key="sk-test", base_url=s.base_url)
        async with client.live.connect() as conn:
            await conn.send(START)  # type: ignore[arg-type]
            seen: list[Any] = []
            await until(conn, "session.started", seen)
            await conn.send({"type": "session.commentary.append", "content": "Greet.",
                             "delegation_id": None})
            await until(conn, "session.output_audio.delta", seen)
            payload = speech_like(600, seed=1) + silence(600)
            await send_audio(conn, payload)
            first = await until(conn, "session.input_transcript.delta", seen)
            assert first.delta == "stop"
            await until(conn, "session.usage.updated", seen)
        session = s.sessions[0]
        assert len(session.interruptions) == 1
        assert 0 < session.interruptions[0]["sent_ms"] < 8000
        assert bytes(session.input_audio) == payload
        assert session.protocol_violations == []


async def test_delegated_function_call_waits_for_its_output() -> None:
    answers = [ScriptedLiveAnswer(delegate=ScriptedDelegation("lookup", {"q": "x"}, "call_1")),
               ScriptedLiveAnswer("It is sunny.")]
    async with GPTLiveStandIn(answers=answers) as s:
        client = AsyncOpenAI(api_key="sk-test", base_url=s.base_url)
        async with client.live.connect() as conn:
            await conn.send(START)  # type: ignore[arg-type]
            seen: list[Any] = []
            await until(conn, "session.started", seen)
            await conn.send({"type": "session.commentary.append", "content": "Greet.",
                             "delegation_id": None})
            await until(conn, "session.delegation.created", seen)
            nested = await until(conn, "response.event", seen)
            item = nested.event["item"]
            assert (item["name"], item["arguments"], item["call_id"]) == (
                "lookup", '{"q":"x"}', "call_1")
            await conn.send({"type": "response.item.create", "item": {
                "type": "function_call_output", "call_id": "call_1", "output": "sunny"}})
            await conn.send({"type": "response.create"})
            await until(conn, "session.output_transcript.delta", seen)
        assert s.sessions[0].tool_outputs == [("call_1", "sunny")]
        assert s.sessions[0].protocol_violations == []


async def test_bad_events_are_refused_with_error() -> None:
    async with GPTLiveStandIn() as s:
        client = AsyncOpenAI(api_key="sk-test", base_url=s.base_url)
        async with client.live.connect() as conn:
            await conn.send_raw('{"type":"session.input_audio.append","audio":"AA=="}')  # type: ignore[attr-defined]
            seen: list[Any] = []
            err = await until(conn, "error", seen)
            assert err.error.code == "session_not_started"
            bad = {"type": "session.start", "session": {"model": "gpt-live-1", "modalities": []}}
            await conn.send_raw(__import__("json").dumps(bad))  # type: ignore[attr-defined]
            err = await until(conn, "error", seen)
            assert "modalities" in err.error.message
    assert validate_live_client_event(START) == []


async def test_start_fault() -> None:
    async with GPTLiveStandIn(start_error="invalid_api_key") as s:
        client = AsyncOpenAI(api_key="sk-test", base_url=s.base_url)
        async with client.live.connect() as conn:
            await conn.send(START)  # type: ignore[arg-type]
            err = await conn.recv()
            assert err.type == "error" and err.error.code == "invalid_api_key"


async def started_conn(base_url: str, key: str = "sk-test") -> tuple[Any, list[Any]]:
    """A started session on the stand-in at ``base_url``: the connection and what it got."""
    client = AsyncOpenAI(api_key=key, base_url=base_url)
    conn = await client.live.connect().enter()
    await conn.send(START)
    seen: list[Any] = []
    await until(conn, "session.started", seen)
    return conn, seen


def pcm24k(ms: int) -> bytes:
    samples = array("h", (((i * 37) % 2000) - 1000 for i in range(24 * ms)))
    return samples.tobytes()


async def test_a_fixture_plays_between_playing_and_played_with_the_caller_muted() -> None:
    clip = pcm24k(600)
    answers = [ScriptedLiveAnswer("a long answer " * 10, audio_ms=6000)]
    # No lead: the clip streams at the pace of the caller's audio, so it plays on while the
    # caller speaks over it.
    async with GPTLiveStandIn(answers=answers, lead_ms=0) as s:
        conn, seen = await started_conn(s.base_url)
        try:
            await conn.send({"type": "session.commentary.append", "content": "Greet.",
                             "delegation_id": None})
            await until(conn, "session.output_audio.delta", seen)
            await conn.send({"type": "session.output_audio.fixture.play", "event_id": "clip1",
                             "audio": base64.b64encode(clip).decode()})
            playing = await until(conn, "session.output_audio.fixture.playing", seen)
            assert playing.client_event_id == "clip1"
            # Context is refused while it plays; caller speech is dropped, not an interruption.
            await conn.send({"type": "session.commentary.append", "content": "Say more.",
                             "delegation_id": None})
            refused = await until(conn, "error", seen)
            assert refused.error.code == "fixture_active"
            payload = speech_like(400, seed=5) + silence(800)
            await send_audio(conn, payload)
            played = await until(conn, "session.output_audio.fixture.played", seen)
            assert played.client_event_id == "clip1"
        finally:
            await conn.close()
        session = s.sessions[0]
        index = next(i for i, e in enumerate(seen)
                     if e.type == "session.output_audio.fixture.playing")
        after = b"".join(base64.b64decode(e.delta) for e in seen[index:]
                         if e.type == "session.output_audio.delta")
        assert after == fixture_to_ulaw(clip) and len(after) == 600 * 8
        assert session.fixtures == [{"event_id": "clip1", "pcm_bytes": len(clip),
                                     "sent": 600 * 8}]
        assert session.interruptions == []  # muted: the caller did not barge in
        assert not any(e.type == "session.input_transcript.delta" for e in seen)
        assert session.protocol_violations == []


async def test_a_bad_fixture_is_refused_before_anything_stops() -> None:
    async with GPTLiveStandIn() as s:
        conn, seen = await started_conn(s.base_url)
        try:
            too_long = base64.b64encode(b"\x00" * (FIXTURE_MAX_BYTES + 2)).decode()
            for audio in ("AA==", too_long):  # odd bytes (not PCM16), over 30 s
                await conn.send({"type": "session.output_audio.fixture.play",
                                 "event_id": "bad", "audio": audio})
                err = await until(conn, "error", seen)
                assert (err.error.code, err.error.client_event_id) == (
                    "invalid_fixture_audio", "bad")
        finally:
            await conn.close()
        assert s.sessions[0].fixtures == []


async def test_a_client_delegation_waits_for_the_clients_reply_for_its_id() -> None:
    answers = [ScriptedLiveAnswer(delegate_to_client=True), ScriptedLiveAnswer("Next one.")]
    async with GPTLiveStandIn(answers=answers) as s:
        conn, seen = await started_conn(s.base_url)
        try:
            await conn.send({"type": "session.commentary.append", "content": "Greet.",
                             "delegation_id": None})
            created = await until(conn, "session.delegation.created", seen)
            assert created.delegation.target == "client" and created.delegation.response_id is None
            await conn.send({"type": "session.thinking.append", "content": "Nothing to run.",
                             "delegation_id": created.delegation.id})
            words = await until(conn, "session.output_transcript.delta", seen)
            assert words.delta == "Next"
        finally:
            await conn.close()
        session = s.sessions[0]
        assert session.delegation_replies == [
            (created.delegation.id, "session.thinking.append", "Nothing to run.")]
        assert session.protocol_violations == []


async def test_scripted_fragments_and_faults() -> None:
    answers = [
        ScriptedLiveAnswer("One. Two.", audio_ms=2000, fragments=[
            ScriptedFragment("One.", 0, 300), ScriptedFragment(" Two.", 1500, 1800)]),
        ScriptedLiveAnswer(fail_with="server_error"),
        ScriptedLiveAnswer(close_reason="expired"),
    ]
    async with GPTLiveStandIn(answers=answers, lead_ms=5000) as s:
        conn, seen = await started_conn(s.base_url)
        try:
            for _ in range(3):
                await conn.send({"type": "session.commentary.append", "content": "Go.",
                                 "delegation_id": None})
                await asyncio.sleep(0.2)
            closed = await until(conn, "session.closed", seen)
            assert closed.reason == "expired"
        finally:
            await conn.close()
        fragments = [(e.delta, e.start_ms, e.end_ms) for e in seen
                     if e.type == "session.output_transcript.delta"]
        assert fragments == [("One.", 0, 300), (" Two.", 1500, 1800)]
        assert [e.error.code for e in seen if e.type == "error"] == ["server_error"]
        assert s.sessions[0].protocol_violations == []


async def test_a_refused_upgrade_and_the_shared_scripts() -> None:
    assert ScriptedDelegation is ScriptedFunctionCall
    answer = ScriptedLiveAnswer.from_dict({"text": "Hi", "delegate": {"name": "get_time"},
                                           "fragments": [{"delta": "Hi", "start_ms": 0,
                                                          "end_ms": 100}]})
    assert answer.delegate == ScriptedFunctionCall("get_time")
    assert answer.fragments == [ScriptedFragment("Hi", 0, 100)]
    async with GPTLiveStandIn(refuse_status=429) as s:
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(s.ws_url + "/live/sessions",
                                     additional_headers={"Authorization": "Bearer sk-test"})
        assert refused.value.response.status_code == 429
        assert json.loads(refused.value.response.body)["error"]["code"] == "rate_limit_exceeded"


async def test_the_command_line_serves_until_sigterm_and_records_sessions(tmp_path: Any) -> None:
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps([{"text": "Hi there", "audio_ms": 400}]))
    record = tmp_path / "record.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voiceconv.testing.live_server", "--api-key", "sk-local",
        "--answers", str(answers), "--record", str(record),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        base_url = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
        guide = (await asyncio.wait_for(proc.stdout.readuntil(b"SIGTERM."), 10)).decode()
        assert f"OPENAI_BASE_URL={base_url} OPENAI_API_KEY=sk-local" in guide
        assert "/live/sessions" in guide
        conn, seen = await started_conn(base_url, "sk-local")
        await conn.send(GREET)
        await until(conn, "session.usage.updated", seen)
        await conn.close()
        said = "".join(e.delta for e in seen if e.type == "session.output_transcript.delta")
        assert said == "Hi there"
    finally:
        proc.terminate()
    assert await asyncio.wait_for(proc.wait(), 10) == 0
    (summary,) = json.loads(record.read_text())
    assert summary["model"] == "gpt-live-1" and summary["commentary"] == ["Greet."]
    assert summary["output_ms"] == 400 and summary["protocol_violations"] == []


async def test_the_command_line_help_describes_every_option() -> None:
    parser = build_parser()
    assert parser.description
    for action in parser._actions:
        assert action.help, f"{action.option_strings} has no description in --help"


from voiceconv.testing.fixtures import gpt_live_standin  # noqa: E402, F401  (the fixture)


async def test_the_pytest_fixture(gpt_live_standin: GPTLiveStandIn) -> None:  # noqa: F811
    client = AsyncOpenAI(api_key="test-key", base_url=gpt_live_standin.base_url)
    async with client.live.connect() as conn:
        await conn.send(START)  # type: ignore[arg-type]
        assert (await conn.recv()).type == "session.started"
