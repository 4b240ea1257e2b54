"""The Realtime stand-in, driven by the real ``openai`` SDK over loopback sockets."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import sys
from collections.abc import AsyncIterator
from typing import Any

import pydantic
import pytest
import websockets
from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection
from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from voiceconv.testing import (
    RealtimeStandIn,
    ScriptedFunctionCall,
    ScriptedResponse,
    StandInSession,
    frames,
    silence,
    speech_like,
    validate_client_event,
    validate_server_event,
)

MODEL = "gpt-realtime-2.1"
PCMU_SESSION: dict[str, Any] = {
    "type": "realtime",
    "instructions": "You are the phone agent.",
    "audio": {
        "input": {"format": {"type": "audio/pcmu"}},
        "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"},
    },
}

SERVER_EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RealtimeServerEvent)
CLIENT_EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RealtimeClientEvent)


@pytest.fixture
async def standin() -> AsyncIterator[RealtimeStandIn]:
    async with RealtimeStandIn(api_key="test-key") as server:
        yield server


@pytest.fixture
async def client(standin: RealtimeStandIn) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=standin.base_url, api_key="test-key") as sdk:
        yield sdk


class Wire:
    """Test-side helpers: raw events read through the SDK, each validated on arrival."""

    def __init__(self, conn: AsyncRealtimeConnection) -> None:
        self.conn = conn
        self.events: list[dict[str, Any]] = []

    async def next(self, timeout: float = 3.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.conn.recv_bytes(), timeout)
        event = json.loads(raw)
        SERVER_EVENTS.validate_python(event)  # raises if the SDK would not accept it
        assert self.conn.parse_event(raw).type == event["type"]
        self.events.append(event)
        return event

    async def until(self, type: str, timeout: float = 3.0) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        while True:
            event = await self.next(timeout)
            seen.append(event)
            if event["type"] == type:
                return seen

    async def send(self, event: dict[str, Any]) -> None:
        CLIENT_EVENTS.validate_python(event)
        assert validate_client_event(event) == []
        await self.conn.send(event)  # type: ignore[arg-type]

    async def append(self, audio: bytes, frame_bytes: int = 160) -> None:
        for frame in frames(audio, frame_bytes):
            await self.send(
                {"type": "input_audio_buffer.append", "audio": base64.b64encode(frame).decode()}
            )

    async def configure(self, session: dict[str, Any] | None = None) -> dict[str, Any]:
        assert (await self.next())["type"] == "session.created"
        await self.send({"type": "session.update", "session": session or PCMU_SESSION})
        updated = await self.next()
        assert updated["type"] == "session.updated"
        return updated


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def assert_clean(session: StandInSession) -> None:
    assert session.protocol_violations == []
    for event in session.sent:
        assert validate_server_event(event) == [], event["type"]


# --- handshake --------------------------------------------------------------------------------


async def test_session_created_defaults_and_partial_update(
    standin: RealtimeStandIn, client: AsyncOpenAI
) -> None:
    async with client.realtime.connect(model=MODEL) as conn:
        wire = Wire(conn)
        created = await wire.next()
        assert created["type"] == "session.created"
        s = created["session"]
        assert s["type"] == "realtime" and s["object"] == "realtime.session"
        assert s["id"].startswith("sess_") and s["model"] == MODEL
        assert s["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
        assert s["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
        td = s["audio"]["input"]["turn_detection"]
        assert (
            td["type"],
            td["threshold"],
            td["prefix_padding_ms"],
            td["silence_duration_ms"],
        ) == ("server_vad", 0.5, 300, 500)
        assert td["create_response"] is True and td["interrupt_response"] is True
        assert s["audio"]["output"]["voice"] and s["audio"]["input"]["transcription"] is None

        await wire.send({"type": "session.update", "session": PCMU_SESSION})
        updated = (await wire.next())["session"]
        assert updated["instructions"] == "You are the phone agent."
        assert updated["audio"]["input"]["format"] == {"type": "audio/pcmu"}
        assert updated["audio"]["input"]["turn_detection"] == td  # untouched keys kept
        assert updated["tools"] == [] and updated["id"] == s["id"]

        await wire.send(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "audio": {
                        "input": {
                            "turn_detection": {"type": "server_vad", "silence_duration_ms": 800}
                        }
                    },
                },
            }
        )
        merged = (await wire.next())["session"]
        assert merged["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 800
        assert merged["audio"]["input"]["turn_detection"]["threshold"] == 0.5
        assert merged["audio"]["input"]["format"] == {"type": "audio/pcmu"}

    session = await standin.wait_for_session()
    await asyncio.wait_for(session.closed.wait(), 2)
    assert session.close_code == 1000
    headers = {k.lower(): v for k, v in standin.handshakes[0]["headers"].items()}
    assert headers["authorization"] == "Bearer test-key"
    assert "openai-beta" not in headers
    assert standin.handshakes[0]["path"].startswith("/v1/realtime?model=gpt-realtime-2.1")
    assert_clean(session)


@pytest.mark.parametrize(
    ("session_value", "code", "param", "message"),
    [
        (
            {"type": "realtime", "instructions": "new", "turn_detection": {"type": "server_vad"}},
            "unknown_parameter",
            "session.turn_detection",
            "Unknown parameter: 'session.turn_detection'.",
        ),
        (
            {"type": "realtime", "audio": {"input": {"input_audio_noise_reduction": None}}},
            "unknown_parameter",
            "session.audio.input.input_audio_noise_reduction",
            "Unknown parameter: 'session.audio.input.input_audio_noise_reduction'.",
        ),
        (
            {"instructions": "new", "modalities": ["audio"]},
            "missing_required_parameter",
            "session.type",
            "Missing required parameter: 'session.type'.",
        ),
    ],
)
async def test_bad_session_update_is_rejected_whole(
    standin: RealtimeStandIn,
    client: AsyncOpenAI,
    session_value: dict[str, Any],
    code: str,
    param: str,
    message: str,
) -> None:
    async with client.realtime.connect(model=MODEL) as conn:
        wire = Wire(conn)
        created = await wire.next()
        await conn.send({"type": "session.update", "session": session_value})  # type: ignore[typeddict-item]
        error = await wire.next()
        assert error["type"] == "error"
        assert error["error"]["type"] == "invalid_request_error"
        assert (error["error"]["code"], error["error"]["param"]) == (code, param)
        assert error["error"]["message"] == message
        # Nothing of the update was applied; the connection stays usable.
        await wire.send({"type": "session.update", "session": {"type": "realtime"}})
        after = (await wire.next())["session"]
        assert after["instructions"] == created["session"]["instructions"]
        assert after["audio"] == created["session"]["audio"]
    session = standin.sessions[0]
    assert len(session.protocol_violations) == 1


async def test_refused_upgrade_makes_connect_raise(standin: RealtimeStandIn) -> None:
    standin.refuse_status = 403
    async with AsyncOpenAI(base_url=standin.base_url, api_key="test-key") as sdk:
        with pytest.raises(InvalidStatus) as info:
            async with sdk.realtime.connect(model=MODEL):
                pass
    assert info.value.response.status_code == 403
    assert json.loads(info.value.response.body)["error"]["message"]
    assert standin.sessions == []


@pytest.mark.parametrize(
    ("path", "key", "status"),
    [
        ("/v1/realtime?model=m", "wrong", 401),
        ("/v1/realtime?model=m", None, 401),
        ("/v1/other?model=m", "test-key", 404),
        ("/v1/realtime", "test-key", 400),
    ],
)
async def test_handshake_checks(
    standin: RealtimeStandIn, path: str, key: str | None, status: int
) -> None:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    url = standin.ws_url.removesuffix("/v1") + path
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(url, additional_headers=headers):
            pass
    assert info.value.response.status_code == status


async def test_refuse_401_via_sdk_with_wrong_key(standin: RealtimeStandIn) -> None:
    async with AsyncOpenAI(base_url=standin.base_url, api_key="nope") as sdk:
        with pytest.raises(InvalidStatus) as info:
            await sdk.realtime.connect(model=MODEL).enter()
    assert info.value.response.status_code == 401


# --- input audio and VAD ----------------------------------------------------------------------


async def test_vad_from_speech_then_silence(standin: RealtimeStandIn, client: AsyncOpenAI) -> None:
    standin.caller_transcripts.append("I need help with my order")
    config = json.loads(json.dumps(PCMU_SESSION))
    config["audio"]["input"]["transcription"] = {"model": "gpt-realtime-whisper"}
    config["audio"]["input"]["turn_detection"] = {"type": "server_vad", "create_response": False}
    audio = silence(400) + speech_like(600) + silence(700)
    async with client.realtime.connect(model=MODEL) as conn:
        wire = Wire(conn)
        await wire.configure(config)
        await wire.append(audio)
        events = await wire.until("conversation.item.input_audio_transcription.completed")
        vad = [e for e in events if not e["type"].startswith("conversation.item.input_audio")]
        assert types(vad) == [
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "conversation.item.added",
            "conversation.item.done",
        ]
        started, stopped, committed, added, _ = vad
        assert started["audio_start_ms"] == 400 - 300  # onset minus prefix padding
        assert stopped["audio_end_ms"] == 1000
        item_id = started["item_id"]
        assert item_id == stopped["item_id"] == committed["item_id"] == added["item"]["id"]
        assert added["item"]["role"] == "user"
        assert events[-1]["transcript"] == "I need help with my order"
        assert events[-1]["item_id"] == item_id
        session = standin.sessions[0]
        assert session.input_ms == 1700
        assert bytes(session.input_audio) == audio
        assert [b64 for _, b64 in session.appends] == [
            base64.b64encode(f).decode() for f in frames(audio)
        ]
        times = [t for t, _ in session.appends]
        assert times == sorted(times)
        assert "response.created" not in session.sent_types()  # create_response was false
    assert_clean(session)


async def test_default_pcm_format_misreads_mulaw(
    standin: RealtimeStandIn, client: AsyncOpenAI
) -> None:
    """Without session.update the input is PCM 24 kHz: μ-law bytes give the wrong clock."""
    async with client.realtime.connect(model=MODEL) as conn:
        wire = Wire(conn)
        await wire.next()
        await wire.append(silence(600))
        session = await standin.wait_for_session()
        await wire.send({"type": "input_audio_buffer.clear"})
        assert (await wire.next())["type"] == "input_audio_buffer.cleared"
        assert session.input_ms == 4800 // 48


async def test_trigger_hooks_and_expect_event(
    standin: RealtimeStandIn, client: AsyncOpenAI
) -> None:
    standin.default_response = ScriptedResponse(text="Sure.", audio_ms=200)
    async with client.realtime.connect(model=MODEL) as conn:
        wire = Wire(conn)
        await wire.configure()
        session = await standin.wait_for_session()
        update = await session.expect_event("session.update")
        assert update["session"]["instructions"] == "You are the phone agent."
        with pytest.raises(TimeoutError):
            await session.expect_event("session.update", timeout=0.05)  # already consumed
        item_id = await session.trigger_speech_started()
        assert (await wire.next())["item_id"] == item_id
        assert await session.trigger_speech_stopped() == item_id
        events = await wire.until("response.done")
        assert types(events)[:4] == [
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "conversation.item.added",
            "conversation.item.done",
        ]
        assert "response.created" in types(events)
    assert_clean(session)


# --- responses --------------------------------------------------------------------------------

MESSAGE_ORDER = re.compile(
    r"response\.created rate_limits\.updated response\.output_item\.added "
    r"conversation\.item\.added response\.content_part\.added "
    r"(response\.output_audio\.delta (response\.output_audio_transcript\.delta )?)+"
    r"response\.output_audio\.done response\.output_audio_transcript\.done "
    r"response\.content_part\.done response\.output_item\.done conversation\.item\.done "
    r"response\.done"
)


async def test_scripted_response_order_ids_and_pacing(
    standin: RealtimeStandIn, client: AsyncOpenAI
) -> None:
    text = "Thanks for calling Acme, how can I help you today?"
    standin.responses.append(ScriptedResponse(text=text, audio_ms=2000))
    async with client.realtime.connect(model=MODEL) as conn:
        wire = Wire(conn)
        await wire.configure()
        await wire.send(
            {"type": "response.create", "response": {"instructions": "Greet the caller."}}
        )
        events = await wire.until("response.done")
    session = standin.sessions[0]
    assert session.response_requests == [{"instructions": "Greet the caller."}]
    assert MESSAGE_ORDER.fullmatch(" ".join(types(events))), types(events)

    created, done = events[0], events[-1]
    resp_id = created["response"]["id"]
    assert resp_id.startswith("resp_") and created["response"]["status"] == "in_progress"
    item_id = events[2]["item"]["id"]
    assert item_id.startswith("item_")
    deltas = [e for e in events if e["type"] == "response.output_audio.delta"]
    for delta in deltas:
        assert (
            delta["response_id"],
            delta["item_id"],
            delta["output_index"],
            delta["content_index"],
        ) == (resp_id, item_id, 0, 0)
    audio = b"".join(base64.b64decode(d["delta"]) for d in deltas)
    assert len(audio) == 2000 * 8
    assert len({len(base64.b64decode(d["delta"])) for d in deltas}) > 1  # varying chunk sizes
    # What the stand-in recorded as sent is byte-for-byte what arrived, and unique.
    assert [(i, b) for _, i, b in session.sent_deltas] == [(item_id, d["delta"]) for d in deltas]
    assert len({d["delta"] for d in deltas}) == len(deltas)
    # Faster than real time: 2 s of audio went out in well under 2 s.
    send_times = [t for t, _, _ in session.sent_deltas]
    assert send_times[-1] - send_times[0] < 1.0

    transcript = "".join(
        e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta"
    )
    assert transcript == text
    response = done["response"]
    assert response["status"] == "completed" and response["id"] == resp_id
    assert response["output"][0]["content"] == [{"type": "output_audio", "transcript": text}]
    usage = response["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["input_token_details"]["audio_tokens"] is not None
    assert usage["output_token_details"]["audio_tokens"] == 40
    ids = [e["event_id"] for e in wire.events]
    assert len(set(ids)) == len(ids)
    assert_clean(session)


async def test_voice_cannot_change_after_first_audio(
    standin: RealtimeStandIn, client: AsyncOpenAI
) -> None:
    standin.default_response = ScriptedResponse(text="Hi.", audio_ms=100)
    async with client.realtime.connect(model=MODEL) as conn:
        wire = Wire(conn)
        await wire.configure()
        await wire.send(
            {
                "type": "session.update",
                "session": {"type": "realtime", "audio": {"output": {"voice": "cedar"}}},
            }
        )
        assert (await wire.next())["session"]["audio"]["output"]["voice"] == "cedar"
        await wire.send({"type": "response.create"})
        await wire.until("response.done")
        await wire.send(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "instructions": "x",
                    "audio": {"output": {"voice": "marin"}},
                },
            }
        )
        error = await wire.next()
        assert error["error"]["code"] == "cannot_update_voice"
        await wire.send(
            {
                "type": "session.update",
                "session": {"type": "realtime", "audio": {"output": {"voice": "cedar"}}},
            }
        )
        same = await wire.next()
        assert same["type"] == "session.updated"
        assert same["session"]["instructions"] != "x"


async def test_interruption_emits_cancelled_tail(
    standin: RealtimeStandIn, client: AsyncOpenAI
) -> None:
    text = "Your order shipped on Monday and should arrive by Thursday afternoon."
    standin.responses.append(ScriptedResponse(text=text, audio_ms=6000, speed_factor=2.0))
    async with client.realtime.connect(model=MODEL) as conn:
        wire = Wire(conn)
        await wire.configure()
        await wire.send({"type": "response.create"})
        before: list[dict[str, Any]] = []
        while sum(e["type"] == "response.output_audio.delta" for e in before) < 3:
            before.append(await wire.next())
        await wire.append(speech_like(100))  # the caller barges in
        after = await wire.until("response.done")
    assert after[0]["type"] != "response.done"
    tail = [e for e in after if not e["type"].endswith(".delta")]
    assert types(tail) == [
        "input_audio_buffer.speech_started",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    assert tail[4]["item"]["status"] == "incomplete"
    partial = tail[2]["transcript"]
    assert partial and len(partial) < len(text) and text.startswith(partial)
    response = tail[-1]["response"]
    assert response["status"] == "cancelled"
    assert response["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    deltas = [e for e in before + after if e["type"] == "response.output_audio.delta"]
    assert sum(len(base64.b64decode(d["delta"])) for d in deltas) < 6000 * 8
    session = standin.sessions[0]
    assert session.active is None
    assert_clean(session)


async def test_truncate_within_and_beyond_item_audio(
    standin: RealtimeStandIn, client: AsyncOpenAI
) -> None:
    standin.default_response = ScriptedResponse(text="One moment please.", audio_ms=1000)
    async with client.realtime.connect(model=MODEL) as conn:
        wire = Wire(conn)
        await wire.configure()
        await wire.send({"type": "response.create"})
        events = await wire.until("response.done")
        item_id = events[-1]["response"]["output"][0]["id"]

        await wire.send(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": 1500,
            }
        )
        error = (await wire.next())["error"]
        assert error["type"] == "invalid_request_error"
        assert error["message"] == "Audio content of 1000ms is already shorter than 1500ms"

        await wire.send(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": 480,
            }
        )
        truncated = await wire.next()
        assert truncated["type"] == "conversation.item.truncated"
        assert (truncated["item_id"], truncated["audio_end_ms"]) == (item_id, 480)

        await wire.send(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": 600,
            }
        )  # now longer than the item
        assert "is already shorter than 600ms" in (await wire.next())["error"]["message"]

        await wire.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "(caller pressed 1)"}],
                },
            }
        )
        user_item = (await wire.until("conversation.item.done"))[-1]["item"]["id"]
        await wire.send(
            {
                "type": "conversation.item.truncate",
                "item_id": user_item,
                "content_index": 0,
                "audio_end_ms": 0,
            }
        )
        assert (await wire.next())["type"] == "error"
    session = standin.sessions[0]
    assert session.truncates == [
        (item_id, 1500, False),
        (item_id, 480, True),
        (item_id, 600, False),
        (user_item, 0, False),
    ]
    assert session.items[item_id].transcript == ""


async def test_function_call_script_and_output_without_response(
    standin: RealtimeStandIn, client: AsyncOpenAI
) -> None:
    standin.responses.append(
        ScriptedResponse(
            text="", function_calls=[ScriptedFunctionCall("lookup_order", {"order_id": "A17"})]
        )
    )
    standin.responses.append(ScriptedResponse(text="It shipped.", audio_ms=200))
    async with client.realtime.connect(model=MODEL) as conn:
        wire = Wire(conn)
        await wire.configure()
        await wire.send({"type": "response.create"})
        events = await wire.until("response.done")
        order = [t for t in types(events) if t != "response.function_call_arguments.delta"]
        assert order == [
            "response.created",
            "rate_limits.updated",
            "response.output_item.added",
            "conversation.item.added",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "conversation.item.done",
            "response.done",
        ]
        added = events[2]["item"]
        assert added["type"] == "function_call" and added["arguments"] == ""
        call_id = added["call_id"]
        assert call_id.startswith("call_") and added["name"] == "lookup_order"
        deltas = [
            e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"
        ]
        args_done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
        assert "".join(deltas) == args_done["arguments"] == '{"order_id":"A17"}'
        assert args_done["call_id"] == call_id and args_done["name"] == "lookup_order"
        output = events[-1]["response"]["output"]
        assert [(o["type"], o["call_id"], o["status"]) for o in output] == [
            ("function_call", call_id, "completed")
        ]

        await wire.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "function_call_output",
                    "call_id": call_id,
                    "output": json.dumps({"status": "shipped"}),
                },
            }
        )
        assert types(await wire.until("conversation.item.done")) == [
            "conversation.item.added",
            "conversation.item.done",
        ]
        await wire.send({"type": "response.create"})
        # The function output did not start a response: the next event is ours.
        assert (await wire.next())["type"] == "response.created"
        await wire.until("response.done")
    assert_clean(standin.sessions[0])


async def test_active_response_conflict_and_cancel_rules(
    standin: RealtimeStandIn, client: AsyncOpenAI
) -> None:
    standin.default_response = ScriptedResponse(
        text="A long answer.", audio_ms=5000, speed_factor=1.0
    )
    async with client.realtime.connect(model=MODEL) as conn:
        wire = Wire(conn)
        await wire.configure()
        await wire.send({"type": "response.cancel"})
        error = (await wire.next())["error"]
        assert error["code"] == "response_cancel_not_active"
        assert error["message"] == "Cancellation failed: no active response found"

        await wire.send({"type": "response.create"})
        resp_id = (await wire.next())["response"]["id"]
        await wire.send({"type": "response.create", "event_id": "evt_second"})
        error_event = next(e for e in await wire.until("error") if e["type"] == "error")["error"]
        assert error_event["code"] == "conversation_already_has_active_response"
        assert resp_id in error_event["message"] and error_event["event_id"] == "evt_second"

        await wire.send({"type": "response.cancel", "response_id": resp_id})
        done = (await wire.until("response.done"))[-1]["response"]
        assert done["status"] == "cancelled"
        assert done["status_details"]["reason"] == "client_cancelled"
        await wire.send({"type": "response.cancel"})
        assert (await wire.next())["error"]["code"] == "response_cancel_not_active"
    session = standin.sessions[0]
    assert len(session.errors) == 3
    assert_clean(session)


async def test_bad_client_input_gets_error_and_connection_survives(
    standin: RealtimeStandIn, client: AsyncOpenAI
) -> None:
    async with client.realtime.connect(model=MODEL) as conn:
        wire = Wire(conn)
        await wire.configure()
        await conn.send_raw("{not json")
        assert (await wire.next())["error"]["type"] == "invalid_request_error"
        await conn.send_raw(json.dumps({"type": "session.bogus", "event_id": "evt_1"}))
        error = (await wire.next())["error"]
        assert (error["code"], error["param"], error["event_id"]) == (
            "invalid_value",
            "type",
            "evt_1",
        )
        await conn.send_raw(
            json.dumps({"type": "conversation.item.truncate", "item_id": "x", "content_index": 0})
        )
        error = (await wire.next())["error"]
        assert (error["code"], error["param"], error["message"]) == (
            "missing_required_parameter",
            "audio_end_ms",
            "Missing required parameter: 'audio_end_ms'.",
        )
        await conn.send_raw(json.dumps({"type": "response.create", "response": {"temperature": 1}}))
        error = (await wire.next())["error"]
        assert (error["code"], error["param"]) == ("unknown_parameter", "response.temperature")
        await wire.send({"type": "session.update", "session": {"type": "realtime"}})
        assert (await wire.next())["type"] == "session.updated"
    session = standin.sessions[0]
    assert len(session.protocol_violations) == 4
    assert session.sent_types().count("response.created") == 0
    assert {e["type"] for e in session.received} >= {"session.bogus", "session.update"}


async def test_idle_timeout_and_failed_response(
    standin: RealtimeStandIn, client: AsyncOpenAI
) -> None:
    standin.responses.extend(
        [
            ScriptedResponse(text="Hello?", audio_ms=200),
            ScriptedResponse(fail_with="insufficient_quota"),
        ]
    )
    config = json.loads(json.dumps(PCMU_SESSION))
    config["audio"]["input"]["turn_detection"] = {"type": "server_vad", "idle_timeout_ms": 500}
    async with client.realtime.connect(model=MODEL) as conn:
        wire = Wire(conn)
        await wire.configure(config)
        await wire.send({"type": "response.create"})
        await wire.until("response.done")
        await wire.append(silence(1000))  # 200 ms of reply audio + 500 ms idle, on the input clock
        events = await wire.until("response.done")
    assert types(events)[:5] == [
        "input_audio_buffer.timeout_triggered",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "response.created",
    ]
    assert events[0]["audio_end_ms"] == 700
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["output"] == []
    assert failed["status_details"]["error"]["code"] == "insufficient_quota"
    assert_clean(standin.sessions[0])


# --- the live service's dynamics ----------------------------------------------------------------


def vad_config(**turn_detection: Any) -> dict[str, Any]:
    config = json.loads(json.dumps(PCMU_SESSION))
    config["audio"]["input"]["turn_detection"] = {"type": "server_vad", **turn_detection}
    return config


def no_turn_detection() -> dict[str, Any]:
    config = json.loads(json.dumps(PCMU_SESSION))
    config["audio"]["input"]["turn_detection"] = None
    return config


async def test_response_with_a_preamble_item_starts_the_answer_before_the_preamble_ends(
    standin: RealtimeStandIn, client: AsyncOpenAI
) -> None:
    standin.responses.append(
        ScriptedResponse(preamble="One moment.", text="Your order shipped on Monday.")
    )
    async with client.realtime.connect(model=MODEL) as conn:
        wire = Wire(conn)
        await wire.configure()
        await wire.send({"type": "response.create"})
        events = await wire.until("response.done")
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert [e["output_index"] for e in added] == [0, 1]
    first, second = (e["item"]["id"] for e in added)
    assert first != second

    def at(kind: str, item_id: str) -> int:
        return next(
            i
            for i, e in enumerate(events)
            if e["type"] == kind and (e.get("item_id") or e.get("item", {}).get("id")) == item_id
        )

    second_added = at("response.output_item.added", second)
    second_delta = at("response.output_audio.delta", second)
    assert second_added < second_delta < at("response.output_audio.done", first)
    assert second_delta < at("response.output_item.done", first)
    assert at("response.output_audio.delta", first) < second_added
    deltas = [e for e in events if e["type"] == "response.output_audio.delta"]
    assert all(e["output_index"] == (0 if e["item_id"] == first else 1) for e in deltas)
    done = events[-1]["response"]
    assert done["status"] == "completed"
    assert [o["content"][0]["transcript"] for o in done["output"]] == [
        "One moment.",
        "Your order shipped on Monday.",
    ]
    assert [o["status"] for o in done["output"]] == ["completed", "completed"]
    session = standin.sessions[0]
    assert session.items[first].audio_ms == 60 * len("One moment.")
    assert_clean(session)


async def test_barge_in_during_the_answer_item_keeps_the_preamble_whole(
    standin: RealtimeStandIn, client: AsyncOpenAI
) -> None:
    standin.responses.append(
        ScriptedResponse(preamble="Sure.", text="A long answer " * 10, speed_factor=1.0)
    )
    async with client.realtime.connect(model=MODEL) as conn:
        wire = Wire(conn)
        await wire.configure()
        await wire.send({"type": "response.create"})
        events = await wire.until("response.output_item.done")
        preamble_id = events[-1]["item"]["id"]
        await standin.sessions[0].trigger_speech_started()
        events = await wire.until("response.done")
    done = events[-1]["response"]
    assert done["status_details"]["reason"] == "turn_detected"
    assert [o["status"] for o in done["output"]] == ["completed", "incomplete"]
    assert done["output"][0]["id"] == preamble_id
    assert_clean(standin.sessions[0])


async def test_long_continuous_speech_is_one_turn(
    standin: RealtimeStandIn, client: AsyncOpenAI
) -> None:
    async with client.realtime.connect(model=MODEL) as conn:
        wire = Wire(conn)
        await wire.configure(vad_config(create_response=False))
        await wire.append(silence(400) + speech_like(16_000, seed=3) + silence(700))
        events = await wire.until("input_audio_buffer.committed", timeout=10)
    kinds = types(events)
    assert kinds.count("input_audio_buffer.speech_started") == 1
    assert kinds.count("input_audio_buffer.speech_stopped") == 1
    stopped = next(e for e in events if e["type"] == "input_audio_buffer.speech_stopped")
    assert stopped["audio_end_ms"] >= 16_000
    assert_clean(standin.sessions[0])


async def test_idle_timeout_never_fires_while_the_caller_speaks(
    standin: RealtimeStandIn, client: AsyncOpenAI
) -> None:
    standin.responses.append(ScriptedResponse(text="Hello?", audio_ms=200))
    async with client.realtime.connect(model=MODEL) as conn:
        wire = Wire(conn)
        await wire.configure(vad_config(idle_timeout_ms=500, create_response=False))
        await wire.send({"type": "response.create"})
        await wire.until("response.done")
        await wire.append(speech_like(3000) + silence(600))
        events = await wire.until("input_audio_buffer.committed")
        assert "input_audio_buffer.timeout_triggered" not in types(events)
        # After the turn, the timer runs again from the last reply only when one finished.
        await wire.append(silence(1000))
        with pytest.raises(TimeoutError):
            await wire.until("input_audio_buffer.timeout_triggered", timeout=0.5)
    assert_clean(standin.sessions[0])


async def test_turn_detection_off_honours_the_clients_commit_and_response_create(
    standin: RealtimeStandIn, client: AsyncOpenAI
) -> None:
    async with client.realtime.connect(model=MODEL) as conn:
        wire = Wire(conn)
        updated = await wire.configure(no_turn_detection())
        assert updated["session"]["audio"]["input"]["turn_detection"] is None
        await wire.append(speech_like(1200) + silence(800))
        await wire.send({"type": "input_audio_buffer.commit"})
        events = await wire.until("conversation.item.done")
        assert types(events) == [
            "input_audio_buffer.committed",
            "conversation.item.added",
            "conversation.item.done",
        ]  # no speech_started / speech_stopped, no response of its own
        with pytest.raises(TimeoutError):
            await wire.next(timeout=0.3)
        await wire.send({"type": "response.create"})
        assert (await wire.until("response.done"))[-1]["response"]["status"] == "completed"
    assert_clean(standin.sessions[0])


async def test_create_response_false_waits_for_the_clients_response_create(
    standin: RealtimeStandIn, client: AsyncOpenAI
) -> None:
    async with client.realtime.connect(model=MODEL) as conn:
        wire = Wire(conn)
        await wire.configure(vad_config(create_response=False))
        await wire.append(speech_like(800) + silence(700))
        await wire.until("conversation.item.done")
        with pytest.raises(TimeoutError):
            await wire.until("response.created", timeout=0.3)
        await wire.send({"type": "response.create"})
        assert (await wire.until("response.done"))[-1]["response"]["status"] == "completed"
    assert_clean(standin.sessions[0])


async def test_response_create_meets_a_response_the_client_has_not_seen(
    standin: RealtimeStandIn, client: AsyncOpenAI
) -> None:
    standin.auto_response_created_delay_ms = 300
    async with client.realtime.connect(model=MODEL) as conn:
        wire = Wire(conn)
        await wire.configure(vad_config())
        await wire.append(speech_like(800) + silence(700))
        await wire.until("conversation.item.done")
        await wire.send({"type": "response.create", "event_id": "evt_mine"})
        events = await wire.until("response.done")
    error = events[0]
    assert error["type"] == "error", types(events)
    assert error["error"]["code"] == "conversation_already_has_active_response"
    assert error["error"]["event_id"] == "evt_mine"
    created = next(e for e in events if e["type"] == "response.created")
    assert created["response"]["id"] in error["error"]["message"]
    assert types(events).count("response.created") == 1
    assert_clean(standin.sessions[0])


async def test_a_response_cancelled_by_the_service(
    standin: RealtimeStandIn, client: AsyncOpenAI
) -> None:
    standin.responses.append(
        ScriptedResponse(text="A long answer " * 5, server_cancel_after_ms=400)
    )
    async with client.realtime.connect(model=MODEL) as conn:
        wire = Wire(conn)
        await wire.configure()
        await wire.send({"type": "response.create"})
        events = await wire.until("response.done")
    done = events[-1]["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    assert done["output"][0]["status"] == "incomplete"
    assert 400 <= standin.sessions[0].items[done["output"][0]["id"]].audio_ms < 60 * 70
    assert_clean(standin.sessions[0])


async def read_until_closed(wire: Wire) -> tuple[list[str], int]:
    seen: list[str] = []
    with pytest.raises(ConnectionClosedError) as info:
        while True:
            seen.append((await wire.next(timeout=5))["type"])
    assert info.value.rcvd is not None
    return seen, info.value.rcvd.code


async def test_drop_mid_generation(standin: RealtimeStandIn, client: AsyncOpenAI) -> None:
    standin.responses.append(ScriptedResponse(text="A long answer " * 5, drop_after_ms=500))
    async with client.realtime.connect(model=MODEL) as conn:
        wire = Wire(conn)
        await wire.configure()
        await wire.send({"type": "response.create"})
        seen, code = await read_until_closed(wire)
    assert code == 1011
    assert "response.output_audio.delta" in seen and "response.done" not in seen
    session = standin.sessions[0]
    assert session.dropped
    assert sum(session.items[i].audio_ms for i in session.item_order) >= 500


async def test_drop_between_the_question_and_the_answer(
    standin: RealtimeStandIn, client: AsyncOpenAI
) -> None:
    async with client.realtime.connect(model=MODEL) as conn:
        wire = Wire(conn)
        await wire.configure(vad_config())
        standin.sessions[0].drop_after("input_audio_buffer.committed")
        await wire.append(speech_like(800) + silence(700))
        seen, code = await read_until_closed(wire)
    assert code == 1011
    assert seen[-1] == "input_audio_buffer.committed"
    assert "response.created" not in seen


async def test_drop_while_a_tool_runs(standin: RealtimeStandIn, client: AsyncOpenAI) -> None:
    standin.responses.append(
        ScriptedResponse(text="", function_calls=[ScriptedFunctionCall("lookup_order")])
    )
    async with client.realtime.connect(model=MODEL) as conn:
        wire = Wire(conn)
        await wire.configure()
        standin.sessions[0].drop_after("response.done")
        await wire.send({"type": "response.create"})
        seen, code = await read_until_closed(wire)
    assert code == 1011 and seen[-1] == "response.done"
    assert "response.function_call_arguments.done" in seen


async def test_session_expiry_on_demand(standin: RealtimeStandIn, client: AsyncOpenAI) -> None:
    async with client.realtime.connect(model=MODEL) as conn:
        wire = Wire(conn)
        await wire.configure()
        await standin.sessions[0].expire()
        events = [event async for event in conn]  # the SDK ends silently on 1001
    assert [e.type for e in events] == ["error"]
    assert events[0].error.code == "session_expired"  # type: ignore[union-attr]
    await asyncio.wait_for(standin.sessions[0].closed.wait(), 2)
    assert standin.sessions[0].close_code == 1001


# --- fault injection --------------------------------------------------------------------------


async def test_close_1011_mid_call_reaches_the_sdk(
    standin: RealtimeStandIn, client: AsyncOpenAI
) -> None:
    standin.default_response = ScriptedResponse(text="Hold on.", audio_ms=4000, speed_factor=1.0)
    async with client.realtime.connect(model=MODEL) as conn:
        wire = Wire(conn)
        await wire.configure()
        await wire.send({"type": "response.create"})
        await wire.until("response.output_audio.delta")
        session = standin.sessions[0]
        await session.close(code=1011, reason="boom")
        with pytest.raises(ConnectionClosedError) as info:
            while True:
                await conn.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1011
    await asyncio.wait_for(session.closed.wait(), 2)
    assert session.close_code == 1011 and session.closed_at is not None


async def test_session_lifetime_expires_with_error_then_1001() -> None:
    async with RealtimeStandIn(session_lifetime_s=0.2) as server:
        async with (
            AsyncOpenAI(base_url=server.base_url, api_key="k") as sdk,
            sdk.realtime.connect(model=MODEL) as conn,
        ):
            received = [event async for event in conn]  # ends silently on 1001
        session = server.sessions[0]
        await asyncio.wait_for(session.closed.wait(), 2)
    assert [e.type for e in received] == ["session.created", "error"]
    assert received[1].error.code == "session_expired"  # type: ignore[union-attr]
    assert session.close_code == 1001


async def test_stall_holds_events_until_resume(
    standin: RealtimeStandIn, client: AsyncOpenAI
) -> None:
    async with client.realtime.connect(model=MODEL) as conn:
        wire = Wire(conn)
        await wire.configure()
        session = standin.sessions[0]
        session.stall()
        await wire.send({"type": "session.update", "session": {"type": "realtime"}})
        await session.expect_event("session.update")
        await session.expect_event("session.update")
        with pytest.raises(TimeoutError):
            await wire.next(timeout=0.2)
        session.resume()
        assert (await wire.next())["type"] == "session.updated"
        await session.send_error(
            "server_error", "The server had an error.", error_type="server_error"
        )
        assert (await wire.next())["error"]["code"] == "server_error"
        await session.send_event({"type": "rate_limits.updated", "rate_limits": []})
        assert (await wire.next())["type"] == "rate_limits.updated"


async def test_subprocess_mode_serves(tmp_path: Any) -> None:
    record = tmp_path / "record.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "voiceconv.testing.realtime_server",
        "--port",
        "0",
        "--response-text",
        "Hi.",
        "--record",
        str(record),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        base_url = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", base_url)
        async with (
            AsyncOpenAI(base_url=base_url, api_key="k") as sdk,
            sdk.realtime.connect(model=MODEL) as conn,
        ):
            wire = Wire(conn)
            await wire.configure()
            await wire.send({"type": "response.create"})
            events = await wire.until("response.done")
            assert events[-1]["response"]["output"][0]["content"][0]["transcript"] == "Hi."
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    summary = json.loads(record.read_text())
    assert summary[0]["protocol_violations"] == []
    assert "response.create" in summary[0]["received"]


async def test_subprocess_prints_how_to_point_a_server_and_stops_at_once_on_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-W",
        "error::RuntimeWarning",
        "-m",
        "voiceconv.testing.realtime_server",
        "--api-key",
        "sk-local",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        base_url = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
        guide = (await asyncio.wait_for(proc.stdout.readuntil(b"SIGTERM."), 10)).decode()
        assert f"OPENAI_BASE_URL={base_url} OPENAI_API_KEY=sk-local" in guide
        # A client that never answers the close frame must not hold the process up.
        raw = await websockets.connect(
            base_url.replace("http://", "ws://") + "/realtime?model=" + MODEL,
            additional_headers={"Authorization": "Bearer sk-local"},
        )
        await raw.recv()  # session.created
        raw.transport.pause_reading()
    finally:
        proc.terminate()
    assert await asyncio.wait_for(proc.wait(), 5) == 0
    assert b"RuntimeWarning" not in await proc.stderr.read()
    raw.transport.abort()


def test_command_line_help_describes_every_option() -> None:
    from voiceconv.testing.realtime_server.cli import build_parser

    parser = build_parser()
    assert parser.description
    for action in parser._actions:
        assert action.help, f"{action.option_strings} has no description in --help"


def test_every_public_name_of_the_kit_is_exported_from_voiceconv_testing() -> None:
    import importlib

    import voiceconv.testing as kit

    modules = ["audio", "factory", "realtime_server", "server", "twilio_api", "twilio_client"]
    for name in modules:
        module = importlib.import_module(f"voiceconv.testing.{name}")
        for public in module.__all__:
            assert public in kit.__all__, f"voiceconv.testing does not export {name}.{public}"
            assert getattr(kit, public) is getattr(module, public)
    assert "FakeTwilioAPI" in kit.__all__ and "TwilioStreamClientFactory" in kit.__all__


# --- validators -------------------------------------------------------------------------------


def test_validators_flag_bad_events() -> None:
    assert validate_server_event({"type": "input_audio_buffer.cleared", "event_id": "e"}) == []
    assert validate_server_event({"type": "response.output_audio.delta", "event_id": "e"})
    assert validate_server_event({"type": "nope", "event_id": "e"})
    assert validate_server_event(
        {"type": "input_audio_buffer.cleared", "event_id": "e", "surprise": 1}
    ) == ["input_audio_buffer.cleared: undeclared key 'surprise'"]
    assert validate_client_event({"type": "response.cancel"}) == []
    assert validate_client_event(
        {"type": "session.update", "session": {"type": "realtime", "voice": "marin"}}
    ) == ["session.update: unknown parameter 'session.voice'"]
