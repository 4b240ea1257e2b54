"""Live calls from the database's view (heartbeats, lost calls), the control API's requester
side over a real channel layer, and the ``voiceconv_live`` / ``voiceconv_control`` commands."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
from typing import Any

import pytest
from channels.layers import get_channel_layer
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone

from voiceconv import control, live
from voiceconv.consumers import MediaStreamConsumer
from voiceconv.live_control import dtmf_audio
from voiceconv.models import Agent, Call

pytestmark = pytest.mark.django_db(transaction=True)

SID = "CA" + "1" * 32


def make_call(sid: str = SID, *, heartbeat_ago: float | None = 1.0, **fields: Any) -> Call:
    now = timezone.now()
    defaults: dict[str, Any] = {
        "twilio_stream_sid": "MZ" + sid[2:],
        "from_number": "+14155550123",
        "to_number": "+14155550100",
        "status": "in-progress",
        "stream_started_at": now - dt.timedelta(seconds=90),
        "heartbeat_at": (
            None if heartbeat_ago is None else now - dt.timedelta(seconds=heartbeat_ago)
        ),
        "live_process": "host-a:101",
    }
    defaults.update(fields)
    return Call.objects.create(twilio_call_sid=sid, **defaults)


# --- which calls are live ---------------------------------------------------------------------


def test_live_calls_are_the_streaming_unended_calls_with_a_fresh_heartbeat() -> None:
    fresh = make_call("CA" + "1" * 32)
    make_call("CA" + "2" * 32, heartbeat_ago=600)  # its process is gone
    make_call("CA" + "3" * 32, ended_at=timezone.now())  # ended
    make_call("CA" + "4" * 32, twilio_stream_sid="", stream_started_at=None)  # ringing
    just_started = make_call("CA" + "5" * 32, heartbeat_ago=None,
                             stream_started_at=timezone.now())
    assert {c.pk for c in live.live_calls()} == {fresh.pk, just_started.pk}


def test_calls_of_a_crashed_process_are_marked_lost_after_the_timeout() -> None:
    lost = make_call("CA" + "2" * 32, heartbeat_ago=600)
    never_beat = make_call("CA" + "6" * 32, heartbeat_ago=None)  # started 90 s ago, no beat
    alive = make_call("CA" + "1" * 32)
    assert live.sweep_lost_calls() == 2
    for call in (lost, never_beat):
        call.refresh_from_db()
        assert call.ended_at is not None
        assert call.end_reason == "lost"
        assert call.status == "failed"
        assert "host-a:101" in call.error
        assert call.duration_seconds is not None and call.duration_seconds > 80
    alive.refresh_from_db()
    assert alive.ended_at is None
    assert live.sweep_lost_calls() == 0  # once only


def test_the_timeout_is_a_setting() -> None:
    call = make_call(heartbeat_ago=30)
    assert live.live_calls().filter(pk=call.pk).exists()
    with override_settings(VOICECONV={"LIVE_TIMEOUT_SECONDS": 10}):
        assert not live.live_calls().filter(pk=call.pk).exists()
        assert live.sweep_lost_calls() == 1


def test_heartbeat_refreshes_this_processs_calls_only() -> None:
    mine = make_call("CA" + "1" * 32, heartbeat_ago=20)
    other = make_call("CA" + "2" * 32, heartbeat_ago=20)
    now = timezone.now()
    live._beat([mine.twilio_call_sid], now)
    mine.refresh_from_db()
    other.refresh_from_db()
    assert mine.heartbeat_at == now and mine.live_process == live.process_name()
    assert other.heartbeat_at < now and other.live_process == "host-a:101"


# --- the control API, requester side ----------------------------------------------------------


async def _holder(call_sid: str, *, answer: bool = True) -> tuple[asyncio.Task[Any], list[Any]]:
    """Stand in for the process holding ``call_sid``: join its group and acknowledge."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(MediaStreamConsumer.group_name(call_sid), channel)
    seen: list[Any] = []

    async def serve() -> None:
        while True:
            message = await layer.receive(channel)
            seen.append(message)
            if answer:
                await layer.send(message["reply_to"], {
                    "type": "voiceconv.control.ack", "id": message["id"], "ok": True,
                    "detail": "", "process": "host-a:101",
                })

    return asyncio.ensure_future(serve()), seen


async def test_a_request_reaches_the_calls_group_and_its_acknowledgement_comes_back() -> None:
    await asyncio.to_thread(make_call)
    task, seen = await _holder(SID)
    try:
        result = await control.asay(SID, "Your table is booked.", by="alice")
    finally:
        task.cancel()
    assert result and result.accepted and result.process == "host-a:101"
    assert seen[0]["type"] == "voiceconv.control"
    assert seen[0]["action"] == "say"
    assert seen[0]["args"] == {"text": "Your table is booked."}
    assert seen[0]["by"] == "alice"


async def test_no_acknowledgement_within_the_timeout_is_a_false_result() -> None:
    await asyncio.to_thread(make_call)
    task, seen = await _holder(SID, answer=False)
    try:
        result = await control.arequest(SID, "hang_up", {}, timeout=0.3)
    finally:
        task.cancel()
    assert not result
    assert "no process" in result.detail
    assert len(seen) == 1


async def test_unknown_and_ended_calls_raise_before_anything_is_sent() -> None:
    with pytest.raises(control.CallNotFoundError):
        await control.ahang_up("CA" + "9" * 32)
    await asyncio.to_thread(make_call, ended_at=timezone.now(), end_reason="caller_hung_up")
    with pytest.raises(control.CallNotLiveError, match="ended"):
        await control.awhisper(SID, "Be brief.")
    await asyncio.to_thread(make_call, "CA" + "2" * 32, heartbeat_ago=600)
    with pytest.raises(control.CallNotLiveError, match="heartbeats"):
        await control.asay("CA" + "2" * 32, "Hello")


@pytest.mark.parametrize(
    ("action", "args", "message"),
    [
        ("say", {}, "one of them"),
        ("say", {"text": "a", "instructions": "b"}, "one of them"),
        ("say", {"text": "a", "reasoning_effort": "maximal"}, "reasoning_effort is one of"),
        ("whisper", {"instructions": "  "}, "empty"),
        ("update", {"voice": "cedar"}, "voice is fixed"),
        ("update", {"temperature": 1}, "update takes"),
        ("update", {"turn_detection": {"type": "magic"}}, "turn_detection"),
        ("transfer", {"target": "not a number"}, "international"),
        ("send_dtmf", {"digits": "12x"}, "DTMF"),
        ("explode", {}, "unknown control action"),
    ],
)
def test_bad_arguments_are_refused_with_a_reason(action: str, args: dict[str, Any],
                                                 message: str) -> None:
    with pytest.raises(ValueError, match=message):
        control.validate(action, args)


def test_arguments_are_normalised() -> None:
    assert control.validate("transfer", {"target": "+1 (415) 555-0100"}) == {
        "target": "+14155550100"}
    assert control.validate("send_dtmf", {"digits": "12W#"}) == {"digits": "12w#"}
    assert control.validate("hang_up", {}) == {"reason": "operator", "immediately": False}


def test_dtmf_tones_carry_both_frequencies_of_each_digit() -> None:
    import math

    from voiceconv.testing.audio import ulaw_decode

    audio = dtmf_audio("5")
    pcm = ulaw_decode(audio[: 120 * 8])
    samples = [int.from_bytes(pcm[i:i + 2], "little", signed=True) for i in range(0, len(pcm), 2)]

    def power(freq: float) -> float:  # Goertzel-style single-bin DFT
        re = sum(s * math.cos(2 * math.pi * freq * n / 8000) for n, s in enumerate(samples))
        im = sum(s * math.sin(2 * math.pi * freq * n / 8000) for n, s in enumerate(samples))
        return re * re + im * im

    assert power(770) > 50 * power(697) and power(1336) > 50 * power(1209)
    assert len(dtmf_audio("1w2")) == (120 + 80 + 500 + 120 + 80) * 8


# --- commands -----------------------------------------------------------------------------------


def test_voiceconv_live_lists_the_live_calls() -> None:
    agent = Agent.objects.create(name="Front desk", slug="front-desk")
    make_call(agent=agent)
    make_call("CA" + "2" * 32, heartbeat_ago=600)
    out = io.StringIO()
    call_command("voiceconv_live", stdout=out)
    text = out.getvalue()
    assert SID in text and "Front desk" in text and "+14155550123" in text
    assert "host-a:101" in text and "1:3" in text  # 90 s
    assert "CA" + "2" * 32 not in text
    assert "1 live call(s)." in text
    out = io.StringIO()
    call_command("voiceconv_live", "--json", "--sweep", stdout=out, stderr=io.StringIO())
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["call_sid"] for r in rows] == [SID]
    assert Call.objects.get(twilio_call_sid="CA" + "2" * 32).end_reason == "lost"


def test_voiceconv_live_says_when_there_are_none() -> None:
    out = io.StringIO()
    call_command("voiceconv_live", stdout=out)
    assert out.getvalue().strip() == "No live calls."


def test_voiceconv_control_fails_clearly_for_unknown_or_unanswered_calls() -> None:
    with pytest.raises(CommandError, match="no call"):
        call_command("voiceconv_control", "CA" + "9" * 32, "hangup")
    make_call()
    with pytest.raises(CommandError, match="not taken"):
        call_command("voiceconv_control", SID, "say", "Hello", "--timeout", "0.2")
    with pytest.raises(CommandError, match="DTMF"):
        call_command("voiceconv_control", SID, "dtmf", "x")
    with pytest.raises(CommandError, match="international"):
        call_command("voiceconv_control", SID, "warm-transfer", "front desk", "--brief", "Ada")
    with pytest.raises(CommandError, match="not taken"):
        call_command("voiceconv_control", SID, "warm-transfer", "+14155550188", "--brief",
                     "Ada", "--timeout", "0.2")


async def test_the_end_of_a_call_reaches_the_live_list_whatever_the_writer_loaded() -> None:
    from channels.layers import get_channel_layer

    def setup() -> None:
        make_call(agent=Agent.objects.create(name="Front desk", slug="front-desk"),
                  ended_at=timezone.now(), end_reason="operator")

    await asyncio.to_thread(setup)
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(live.LIST_GROUP, channel)
    call = await Call.objects.aget(twilio_call_sid=SID)  # its agent not loaded
    await live.on_call_ended(MediaStreamConsumer, call=call, reason="operator")
    message = await asyncio.wait_for(layer.receive(channel), 5)
    assert message["event"]["event"] == "ended"
    assert message["event"]["call"]["agent"] == "Front desk"
