"""Token usage by kind (audio, text, image, cached) and the cost of a call from one price table."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import override_settings
from openai.types.realtime.realtime_response_usage import RealtimeResponseUsage

from voiceconv.events import Usage
from voiceconv.models import Call
from voiceconv.pricing import (
    ALL_PRICE_KEYS,
    DEFAULT_PRICES,
    PRICES_AS_OF,
    PRICES_SOURCE,
    SESSION_PRICE_KEYS,
    cost_per_minute,
    estimate_cost,
    session_cost,
)

USAGE = {
    "total_tokens": 3300, "input_tokens": 3000, "output_tokens": 300,
    "input_token_details": {
        "text_tokens": 1000, "audio_tokens": 1500, "image_tokens": 500, "cached_tokens": 1200,
        "cached_tokens_details": {"text_tokens": 800, "audio_tokens": 300, "image_tokens": 100},
    },
    "output_token_details": {"text_tokens": 100, "audio_tokens": 200},
}


def test_usage_counts_every_kind_of_token_of_response_done() -> None:
    RealtimeResponseUsage.model_validate(USAGE, strict=True)  # the SDK's shape
    u = Usage.from_response(USAGE)
    assert (u.input_text_tokens, u.input_audio_tokens, u.input_image_tokens) == (1000, 1500, 500)
    assert u.input_cached_tokens == 1200
    assert (u.input_cached_text_tokens, u.input_cached_audio_tokens,
            u.input_cached_image_tokens) == (800, 300, 100)
    assert (u.output_text_tokens, u.output_audio_tokens) == (100, 200)


def test_the_price_table_is_dated_sourced_and_complete() -> None:
    assert PRICES_AS_OF and "openai.com" in PRICES_SOURCE
    for model, row in DEFAULT_PRICES.items():
        assert set(row) == set(ALL_PRICE_KEYS), model
        if model.startswith("gpt-live"):  # priced by the minute of session, not by tokens
            assert all(row[k] == 0 for k in ALL_PRICE_KEYS if k not in SESSION_PRICE_KEYS)
            assert row["session_paused_minute"] < row["session_active_minute"], model
        else:
            assert row["input_cached_audio"] < row["input_audio"], model
    # GPT-Live's rates are implementers' reports: the source says so.
    assert "gpt-live-1" in DEFAULT_PRICES and "gpt-live-1.1" in DEFAULT_PRICES
    assert "confirm" in PRICES_SOURCE and "$0.05 per active minute" in PRICES_SOURCE


def test_gpt_live_seconds_cost_the_active_and_paused_rates() -> None:
    assert session_cost("gpt-live-1", 60) == Decimal("0.050000")  # no split: all active
    assert session_cost("gpt-live-1.1", 90) == Decimal("0.075000")
    # 120 s of which 60 paused: a minute at each rate.
    assert session_cost("gpt-live-1", 120, 60) == Decimal("0.070000")
    assert session_cost("gpt-live-1", 30, 90) == Decimal("0.010000")  # paused capped at total
    assert session_cost("gpt-live-1", None) == Decimal("0")
    # A GPT-Live model not in the table gets the default row's session rates.
    assert session_cost("gpt-live-9", 60) == Decimal("0.050000")
    # Seconds cost nothing at a Realtime model's prices (it bills tokens).
    assert session_cost("gpt-realtime-2.1", 60) == Decimal("0")


@pytest.mark.django_db
def test_a_gpt_live_call_is_priced_by_its_session_seconds() -> None:
    call = Call(twilio_call_sid="CA" + "8" * 32, model="gpt-live-1", duration_seconds=150)
    assert call.billed_by_session and call.estimated_cost == 0
    call.set_session_seconds(150, 30)
    assert call.estimated_cost == session_cost("gpt-live-1", 150, 30) == Decimal("0.110000")
    assert call.cost_per_minute == Decimal("0.044000")
    call.save()
    saved = Call.objects.get(pk=call.pk)
    assert (saved.session_seconds, saved.session_paused_seconds) == (150, 30)
    assert saved.compute_cost() == Decimal("0.110000")
    summary = saved.cost_summary()
    assert summary["estimated_cost_usd"] == "0.110000" and summary["session_seconds"] == 150
    realtime = Call(twilio_call_sid="CA" + "9" * 32, model="gpt-realtime-2.1")
    assert not realtime.billed_by_session


@override_settings(VOICECONV={"PRICES": {"gpt-live-1": {"session_active_minute": "0.06"}}})
def test_gpt_live_prices_are_overridable_through_the_same_setting() -> None:
    assert session_cost("gpt-live-1", 60, 30) == Decimal("0.030000")  # paused: not given, 0
    assert session_cost("gpt-live-1.1", 60) == Decimal("0.050000")  # the built-in row


def test_cost_prices_each_kind_at_its_own_rate() -> None:
    def one(**tokens: int) -> Decimal:
        return estimate_cost("gpt-realtime-2.1", **tokens)

    assert one(input_audio_tokens=1_000_000) == Decimal("32.000000")
    assert one(input_image_tokens=1_000_000) == Decimal("5.000000")
    assert one(output_text_tokens=1_000_000) == Decimal("24.000000")
    # Cached audio at the cached rate, by the split response.done gave.
    assert one(input_audio_tokens=1_000_000, input_cached_tokens=1_000_000,
               input_cached_audio_tokens=1_000_000) == Decimal("0.400000")
    # A cached image token costs the cached image rate, not the text one.
    assert one(input_image_tokens=1_000_000, input_text_tokens=1_000_000,
               input_cached_tokens=1_000_000, input_cached_image_tokens=1_000_000) == (
        Decimal("0.50") + Decimal("4.00"))
    # Without a split, cached tokens are spread over the input kinds.
    assert one(input_text_tokens=500_000, input_audio_tokens=500_000,
               input_cached_tokens=1_000_000) == Decimal("0.400000")


@pytest.mark.django_db
def test_a_call_adds_usage_by_kind_and_costs_per_minute() -> None:
    call = Call(twilio_call_sid="CA" + "7" * 32, model="gpt-realtime-2.1", duration_seconds=120)
    call.add_usage(Usage.from_response(USAGE))
    call.add_usage(Usage.from_response(USAGE))
    assert call.input_image_tokens == 1000 and call.input_cached_image_tokens == 200
    expected = 2 * estimate_cost(
        "gpt-realtime-2.1", input_text_tokens=1000, input_audio_tokens=1500,
        input_image_tokens=500, input_cached_tokens=1200, input_cached_text_tokens=800,
        input_cached_audio_tokens=300, input_cached_image_tokens=100,
        output_text_tokens=100, output_audio_tokens=200)
    assert call.estimated_cost == expected
    assert call.cost_per_minute == (expected / 2).quantize(Decimal("0.000001"))
    call.save()
    assert Call.objects.get(pk=call.pk).input_cached_audio_tokens == 600
    assert cost_per_minute(Decimal(1), None) is None


@override_settings(VOICECONV={"PRICES": {"gpt-realtime-2.1": {"input_image": "1"}}})
def test_prices_are_overridable_in_settings() -> None:
    assert estimate_cost("gpt-realtime-2.1", input_image_tokens=1_000_000) == Decimal("1.000000")
    assert estimate_cost("gpt-realtime-2.1", input_audio_tokens=1_000_000) == Decimal("0")


