"""Agent, Call and TranscriptEntry: number routing, defaults, session overrides, usage, cost."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.test import override_settings
from django.utils import timezone

from voiceconv.events import Usage
from voiceconv.models import Agent, Call, TranscriptEntry
from voiceconv.models.calls import estimate_cost, prices_for
from voiceconv.phone import number_key

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_agents() -> None:
    """Start without agents (the example project creates a default one after migrate)."""
    Agent.objects.all().delete()


def make_agent(slug: str, **fields: object) -> Agent:
    return Agent.objects.create(name=slug.title(), slug=slug, **fields)


# --- for_number and the default ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+1 415 555 0100", "+14155550100"),
        ("+1 (415) 555-0100", "+14155550100"),
        ("  +441234567890\t", "+441234567890"),
        ("+44.1234.567.890", "+441234567890"),
        ("", ""),
    ],
)
def test_number_key(raw: str, expected: str) -> None:
    assert number_key(raw) == expected


def test_for_number_matches_spaced_numbers_and_falls_back_to_default() -> None:
    support = make_agent("support", phone_numbers="+1 415 555 0100\n\n+44 20 7946 0000")
    sales = make_agent("sales", phone_numbers="+14155550199")
    fallback = make_agent("fallback", is_default=True)

    assert Agent.objects.for_number("+14155550100") == support
    assert Agent.objects.for_number("+1 (415) 555-0100") == support
    assert Agent.objects.for_number("+442079460000") == support
    assert Agent.objects.for_number("+14155550199") == sales
    assert Agent.objects.for_number("+10000000000") == fallback
    assert Agent.objects.for_number("") == fallback


def test_for_number_skips_disabled_agents() -> None:
    make_agent("off", phone_numbers="+14155550100", enabled=False)
    assert Agent.objects.for_number("+14155550100") is None
    default = make_agent("default", is_default=True)
    assert Agent.objects.for_number("+14155550100") == default
    default.enabled = False
    default.save()
    assert Agent.objects.for_number("+14155550100") is None


def test_only_one_default_agent() -> None:
    first = make_agent("first", is_default=True)
    second = make_agent("second")

    second.is_default = True
    with pytest.raises(ValidationError) as excinfo:
        second.full_clean()
    assert "is_default" in excinfo.value.message_dict

    # save() moves the flag instead of failing.
    second.save()
    first.refresh_from_db()
    assert not first.is_default
    assert list(Agent.objects.filter(is_default=True)) == [second]

    # The partial unique constraint stops any path that bypasses save().
    with transaction.atomic(), pytest.raises(IntegrityError):
        Agent.objects.filter(pk=first.pk).update(is_default=True)


def test_clean_normalises_numbers() -> None:
    agent = Agent(name="A", slug="a", phone_numbers=" +1 415 555 0100 \n\n+44 (20) 7946-0000")
    agent.full_clean()
    assert agent.phone_numbers == "+14155550100\n+442079460000"


# --- session overrides ---------------------------------------------------------------------------


def test_blank_agent_overrides_nothing() -> None:
    assert make_agent("plain").session_overrides() == {}


def test_session_overrides_carry_set_fields() -> None:
    agent = make_agent(
        "full",
        model="gpt-realtime-2.1-mini",
        voice="cedar",
        instructions="Be brief.",
        greeting="Say hi.",
        transcription_model="gpt-realtime-whisper",
        transcription_language="de",
        transcription_prompt="Acme, Zorblax",
        noise_reduction="far_field",
        speed=1.2,
        reasoning_effort="low",
        max_output_tokens=512,
        session_extra={"truncation": "disabled"},
    )
    assert agent.session_overrides() == {
        "model": "gpt-realtime-2.1-mini",
        "voice": "cedar",
        "instructions": "Be brief.",
        "greeting": "Say hi.",
        "transcription_model": "gpt-realtime-whisper",
        "transcription_language": "de",
        "transcription_prompt": "Acme, Zorblax",
        "noise_reduction": "far_field",
        "speed": 1.2,
        "reasoning_effort": "low",
        "max_output_tokens": 512,
        "session_extra": {"truncation": "disabled"},
    }


def test_switched_off_options_are_false_not_none() -> None:
    agent = make_agent(
        "quiet", turn_detection_type="none", noise_reduction="off", transcription_model="off"
    )
    assert agent.session_overrides() == {
        "turn_detection": False,
        "noise_reduction": False,
        "transcription_model": False,
    }


def test_one_vad_field_gives_the_full_ga_dict_over_the_setting() -> None:
    agent = make_agent("vad", vad_silence_duration_ms=800)
    assert agent.session_overrides()["turn_detection"] == {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 800,
        "create_response": True,
        "interrupt_response": True,
    }


def test_semantic_vad_keeps_only_its_own_keys() -> None:
    agent = make_agent(
        "semantic",
        turn_detection_type="semantic_vad",
        vad_eagerness="low",
        vad_threshold=0.9,  # not a semantic_vad key: dropped
        vad_interrupt_response=False,
    )
    assert agent.session_overrides()["turn_detection"] == {
        "type": "semantic_vad",
        "eagerness": "low",
        "interrupt_response": False,
    }


@override_settings(VOICECONV={"TURN_DETECTION": {"type": "semantic_vad", "eagerness": "high"}})
def test_vad_override_of_a_semantic_setting() -> None:
    agent = make_agent("s", vad_create_response=False)
    assert agent.session_overrides()["turn_detection"] == {
        "type": "semantic_vad",
        "eagerness": "high",
        "create_response": False,
    }
    server = make_agent("v", turn_detection_type="server_vad", vad_idle_timeout_ms=8000)
    assert server.session_overrides()["turn_detection"] == {
        "type": "server_vad",
        "idle_timeout_ms": 8000,
    }


def test_overrides_feed_the_session_config_builder() -> None:
    from voiceconv.realtime import build_session_config

    agent = make_agent(
        "built", voice="cedar", vad_threshold=0.8, turn_detection_type="server_vad",
        noise_reduction="off", instructions="Only this.",
    )
    session = build_session_config(agent.session_overrides())
    assert session["instructions"] == "Only this."
    assert session["audio"]["output"]["voice"] == "cedar"
    assert session["audio"]["input"]["noise_reduction"] is None
    assert session["audio"]["input"]["turn_detection"]["threshold"] == 0.8
    assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"


# --- usage and cost ------------------------------------------------------------------------------


def test_usage_accumulates_and_prices() -> None:
    call = Call.objects.create(twilio_call_sid="CA" + "1" * 32, model="gpt-realtime-2.1")
    call.add_usage(
        Usage(
            input_tokens=1000, output_tokens=500, input_text_tokens=200, input_audio_tokens=800,
            input_cached_tokens=0, output_text_tokens=100, output_audio_tokens=400,
        )
    )
    call.add_usage(Usage(input_tokens=10, input_text_tokens=10, output_tokens=0))
    call.save()
    call.refresh_from_db()
    assert (call.input_tokens, call.output_tokens) == (1010, 500)
    assert (call.input_text_tokens, call.input_audio_tokens) == (210, 800)
    assert (call.output_text_tokens, call.output_audio_tokens) == (100, 400)
    assert call.responses == 2
    # 210*4 + 800*32 + 100*16 + 400*64 = 840 + 25600 + 1600 + 25600 = 53640 per 1M.
    assert call.estimated_cost == Decimal("0.054440")  # text out at $24 per 1M (2026 list price)


def test_cached_tokens_are_priced_at_the_cached_rate() -> None:
    full = estimate_cost("gpt-realtime-2.1", input_audio_tokens=1_000_000)
    cached = estimate_cost(
        "gpt-realtime-2.1", input_audio_tokens=1_000_000, input_cached_tokens=1_000_000
    )
    assert full == Decimal("32.000000")
    assert cached == Decimal("0.400000")
    # Cached tokens split in proportion between text and audio.
    mixed = estimate_cost(
        "gpt-realtime-2.1",
        input_text_tokens=500_000,
        input_audio_tokens=500_000,
        input_cached_tokens=500_000,
    )
    # 250k uncached text at 4 + 250k uncached audio at 32 + 500k cached at 0.40 (per 1M).
    assert mixed == Decimal("1.0") + Decimal("8.0") + Decimal("0.2")


def test_prices_come_from_the_setting() -> None:
    with override_settings(VOICECONV={"PRICES": {"my-model": {"output_audio": "1"}}}):
        assert prices_for("my-model")["output_audio"] == Decimal("1")
        assert prices_for("my-model")["input_text"] == Decimal("0")
        assert estimate_cost("my-model", output_audio_tokens=2_000_000) == Decimal("2.000000")
        # Unknown models use the default entry.
        assert prices_for("unknown")["input_audio"] == Decimal("32.00")
    assert prices_for("gpt-realtime-2.1-mini")["input_audio"] == Decimal("10.00")


def test_pricing_model_falls_back_to_agent_then_setting() -> None:
    agent = make_agent("mini", model="gpt-realtime-2.1-mini")
    call = Call.objects.create(twilio_call_sid="CA" + "2" * 32, agent=agent)
    assert call.pricing_model == "gpt-realtime-2.1-mini"
    call.agent = None
    assert call.pricing_model == "gpt-realtime-2.1"


# --- transcript entries and call properties ------------------------------------------------------


def test_transcript_sequence_is_unique_per_call_and_properties() -> None:
    call = Call.objects.create(
        twilio_call_sid="CA" + "3" * 32, stream_started_at=timezone.now() - dt.timedelta(minutes=1)
    )
    rows = [
        ("caller", "Hi", None),
        ("assistant", "Hello!", 400),
        ("caller", "Hours?", None),
        ("assistant", "Nine to five.", 900),
        ("tool", "lookup()", None),
        ("assistant", "Anything else?", 700),
    ]
    for i, (role, text, latency) in enumerate(rows, start=1):
        TranscriptEntry.objects.create(
            call=call, sequence=i, role=role, text=text, latency_ms=latency
        )
    with transaction.atomic(), pytest.raises(IntegrityError):
        TranscriptEntry.objects.create(call=call, sequence=1, role="caller", text="dup")
    assert call.turn_count == 5
    assert call.response_latencies == [400, 900, 700]
    assert call.median_latency_ms == 700
    assert [e.sequence for e in call.transcript_entries.all()] == [1, 2, 3, 4, 5, 6]
    other = Call.objects.create(twilio_call_sid="CA" + "4" * 32)
    assert other.median_latency_ms is None
    TranscriptEntry.objects.create(call=other, sequence=1, role="caller", text="Hi")


def test_unheard_text_of_an_interrupted_entry() -> None:
    entry = TranscriptEntry(
        role="assistant", text="Our hours are nine to five.", interrupted=True,
        heard_text="Our hours are", heard_ms=900, total_ms=2000,
    )
    assert entry.heard_part == "Our hours are"
    assert entry.unheard_text == " nine to five."
    whole = TranscriptEntry(role="assistant", text="Fine.")
    assert (whole.heard_part, whole.unheard_text) == ("Fine.", "")
