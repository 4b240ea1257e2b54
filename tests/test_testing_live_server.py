"""The GPT-Live stand-in, reached through the real ``openai`` SDK (``client.live.connect``)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
from openai import AsyncOpenAI

from voiceconv.testing import (
    GPTLiveStandIn,
    ScriptedDelegation,
    ScriptedLiveAnswer,
    silence,
    speech_like,
    validate_live_client_event,
)

pytestmark = pytest.mark.asyncio

START = {
    "type": "session.start",
    "session": {
        "model": "gpt-live-1",
        "instructions": "Be brief.",
        "audio": {"format": {"type": "audio/pcmu", "rate": 8000}, "output": {"voice": "marin"}},
    },
}


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
            for i in range(0, len(payload), 160):
                await conn.send({"type": "session.input_audio.append",
                                 "audio": base64.b64encode(payload[i:i + 160]).decode()})
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


from voiceconv.testing.fixtures import gpt_live_standin  # noqa: E402, F401  (the fixture)


async def test_the_pytest_fixture(gpt_live_standin: GPTLiveStandIn) -> None:  # noqa: F811
    client = AsyncOpenAI(api_key="test-key", base_url=gpt_live_standin.base_url)
    async with client.live.connect() as conn:
        await conn.send(START)  # type: ignore[arg-type]
        assert (await conn.recv()).type == "session.started"
