"""The OpenAI leg's send path: pre-built frames, the very wire websockets would write.

``OpenAIRealtimeBackend.send`` writes each event as one masked text frame straight to the
transport (no per-frame context manager, drain or ``os.urandom`` call). Checked here: the
frames parse with websockets' own parser into the same message, and a real SDK connection to
the strict stand-in (which validates every client event against the SDK's types) receives
every event, in order, with no protocol violation, through the pre-built path.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import pytest
from openai import AsyncOpenAI
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from voiceconv.realtime import OpenAIRealtimeBackend, build_session_config, client_text_frame
from voiceconv.testing import RealtimeStandIn


def parse(raw: bytes) -> Frame:
    reader = StreamReader()
    reader.feed_data(raw)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=True)
    try:
        next(parser)
    except StopIteration as done:
        frame: Frame = done.value
        return frame
    raise AssertionError("incomplete frame")


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 4096, 65535, 65536, 300_000])
def test_a_prebuilt_frame_is_what_websockets_reads(size: int) -> None:
    data = os.urandom(size)
    frame = parse(client_text_frame(data))
    assert (frame.opcode, frame.fin, frame.data) == (Opcode.TEXT, True, data)
    assert frame.rsv1 is frame.rsv2 is frame.rsv3 is False


def test_masks_differ_from_frame_to_frame() -> None:
    masks = {client_text_frame(b"x")[2:6] for _ in range(2000)}
    assert len(masks) > 1990  # 32 random bits each, fetched from os.urandom in blocks


async def test_the_stand_in_validates_every_prebuilt_event() -> None:
    async with RealtimeStandIn(api_key="sk-test") as standin:
        backend = OpenAIRealtimeBackend(
            AsyncOpenAI(api_key="sk-test", base_url=standin.base_url), "gpt-realtime-2.1"
        )
        await backend.connect()
        slow_sends: list[Any] = []
        ws = backend._ws
        original = ws.send

        async def counting_send(message: Any, *args: Any, **kwargs: Any) -> None:
            slow_sends.append(message)
            await original(message, *args, **kwargs)

        ws.send = counting_send
        events: list[dict[str, Any]] = [
            {"type": "session.update", "session": build_session_config()},
            *({"type": "input_audio_buffer.append", "audio": "/////w=="} for _ in range(200)),
            {"type": "conversation.item.create", "item": {
                "type": "message", "role": "user",
                "content": [{"type": "input_text", "text": "é" * 70_000}]}},
        ]
        for event in events:
            await backend.send(json.dumps(event))
        session = await standin.wait_for_session(0)
        deadline = asyncio.get_running_loop().time() + 10
        while len(session.received) < 2 or len(session.appends) < 200:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.02)
        await backend.close()
    assert session.protocol_violations == []
    assert [e["type"] for e in session.received] == ["session.update", "conversation.item.create"]
    assert [audio for _, audio in session.appends] == ["/////w=="] * 200
    assert session.received[-1]["item"]["content"][0]["text"] == "é" * 70_000
    assert slow_sends == []  # every event went through the pre-built path
