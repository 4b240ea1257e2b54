"""What a call's tokens cost: the built-in list prices and ``VOICECONV['PRICES']`` over them."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from voiceconv.conf import voiceconv_settings

__all__ = ["estimate_cost", "prices_for"]


# --- prices ------------------------------------------------------------------------------------

#: USD per one million tokens, by Realtime model. A project overrides or extends this with the
#: ``VOICECONV["PRICES"]`` setting (same shape; a model's dict replaces the built-in one;
#: the ``"default"`` entry prices any model not listed). These are list prices for the
#: gpt-realtime family as published when this was written: check OpenAI's pricing page and
#: set ``VOICECONV["PRICES"]`` for your account rather than trusting them for invoices.
DEFAULT_PRICES: dict[str, dict[str, Decimal]] = {
    "gpt-realtime-2.1": {
        "input_text": Decimal("4.00"),
        "input_audio": Decimal("32.00"),
        "input_cached_text": Decimal("0.40"),
        "input_cached_audio": Decimal("0.40"),
        "output_text": Decimal("16.00"),
        "output_audio": Decimal("64.00"),
    },
    "gpt-realtime-2.1-mini": {
        "input_text": Decimal("0.60"),
        "input_audio": Decimal("10.00"),
        "input_cached_text": Decimal("0.06"),
        "input_cached_audio": Decimal("0.30"),
        "output_text": Decimal("2.40"),
        "output_audio": Decimal("20.00"),
    },
}
DEFAULT_PRICES["default"] = DEFAULT_PRICES["gpt-realtime-2.1"]

_MILLION = Decimal(1_000_000)
_COST_QUANTUM = Decimal("0.000001")


def prices_for(model: str) -> dict[str, Decimal]:
    """The per-1M-token prices for ``model`` (``VOICECONV["PRICES"]`` over the defaults)."""
    table: dict[str, Any] = dict(DEFAULT_PRICES)
    user = voiceconv_settings.PRICES
    if isinstance(user, dict):
        table.update(user)
    chosen = table.get(model) or table.get("default") or DEFAULT_PRICES["default"]
    return {key: Decimal(str(chosen.get(key, 0) or 0)) for key in DEFAULT_PRICES["default"]}


def estimate_cost(
    model: str,
    *,
    input_text_tokens: int = 0,
    input_audio_tokens: int = 0,
    input_cached_tokens: int = 0,
    output_text_tokens: int = 0,
    output_audio_tokens: int = 0,
) -> Decimal:
    """Estimated USD cost of the given token counts.

    ``response.done`` reports cached input tokens as one number; they are split between text
    and audio in proportion to the uncached input counts and priced at the cached rates.
    """
    p = prices_for(model)
    input_total = input_text_tokens + input_audio_tokens
    cached = min(max(input_cached_tokens, 0), input_total)
    cached_text = (
        Decimal(cached) * input_text_tokens / input_total if input_total else Decimal(0)
    )
    cached_audio = Decimal(cached) - cached_text
    cost = (
        (input_text_tokens - cached_text) * p["input_text"]
        + (input_audio_tokens - cached_audio) * p["input_audio"]
        + cached_text * p["input_cached_text"]
        + cached_audio * p["input_cached_audio"]
        + output_text_tokens * p["output_text"]
        + output_audio_tokens * p["output_audio"]
    ) / _MILLION
    return cost.quantize(_COST_QUANTUM, rounding=ROUND_HALF_UP)
