"""Prices of the speech models, in one dated table, and the cost of a call.

Realtime models are priced in USD per one million tokens of each kind (:data:`PRICE_KEYS`);
GPT-Live models in USD per minute of session, active or paused (:data:`SESSION_PRICE_KEYS`),
billed by the second. A project overrides or extends the table with ``VOICECONV["PRICES"]``
(same shape; a model's dict replaces the built-in one, missing keys cost nothing; the
``"default"`` entry prices any model not listed). Check OpenAI's pricing page and set
``VOICECONV["PRICES"]`` for your account rather than trusting these for invoices.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from voiceconv.conf import voiceconv_settings

#: When the built-in prices were last checked, and where they come from.
PRICES_AS_OF = "2026-06"
PRICES_SOURCE = (
    "OpenAI API pricing page (https://openai.com/api/pricing/), gpt-realtime-2 family list "
    "prices as published mid-2026; image prices are gpt-realtime's (2025), not re-published. "
    "GPT-Live (gpt-live-1, gpt-live-1.1): $0.05 per active minute and $0.02 per paused "
    "(standby) minute, billed by the second, as reported by implementers in late 2026 and not "
    "confirmed on OpenAI's pricing page: confirm them for your account. Tokens of a GPT-Live "
    "session's delegated Responses model are billed by OpenAI apart and not in this estimate."
)

#: The price keys, one per kind of token ``response.done`` reports.
PRICE_KEYS = (
    "input_text", "input_audio", "input_image",
    "input_cached_text", "input_cached_audio", "input_cached_image",
    "output_text", "output_audio",
)
#: The GPT-Live price keys: USD per minute of session (``session.usage.updated`` reports
#: billable seconds, and of them the ``paused_seconds`` billed at the paused rate).
SESSION_PRICE_KEYS = ("session_active_minute", "session_paused_minute")
ALL_PRICE_KEYS = (*PRICE_KEYS, *SESSION_PRICE_KEYS)


def _row(**prices: str) -> dict[str, Decimal]:
    return {key: Decimal(prices.get(key, "0")) for key in ALL_PRICE_KEYS}


_GPT_REALTIME_2 = _row(
    input_text="4.00", input_audio="32.00", input_image="5.00",
    input_cached_text="0.40", input_cached_audio="0.40", input_cached_image="0.50",
    output_text="24.00", output_audio="64.00",
)

DEFAULT_PRICES: dict[str, dict[str, Decimal]] = {
    "gpt-realtime-2": _GPT_REALTIME_2,
    "gpt-realtime-2.1": _GPT_REALTIME_2,
    "gpt-realtime-2.1-mini": _row(
        input_text="0.60", input_audio="10.00", input_image="0.80",
        input_cached_text="0.06", input_cached_audio="0.30", input_cached_image="0.08",
        output_text="2.40", output_audio="20.00",
    ),
    "gpt-live-1": _row(session_active_minute="0.05", session_paused_minute="0.02"),
    "gpt-live-1.1": _row(session_active_minute="0.05", session_paused_minute="0.02"),
}
#: Any model not listed: gpt-realtime-2.1's token prices and GPT-Live's session prices (a call
#: reports either tokens or seconds, so each is priced at its own backend's rates).
DEFAULT_PRICES["default"] = {
    **DEFAULT_PRICES["gpt-realtime-2.1"],
    **{key: DEFAULT_PRICES["gpt-live-1"][key] for key in SESSION_PRICE_KEYS},
}

_MILLION = Decimal(1_000_000)
_COST_QUANTUM = Decimal("0.000001")


def prices_for(model: str) -> dict[str, Decimal]:
    """The prices for ``model`` (``VOICECONV["PRICES"]`` over the defaults): per 1M tokens,
    and per minute of session for GPT-Live."""
    table: dict[str, Any] = dict(DEFAULT_PRICES)
    user = voiceconv_settings.PRICES
    if isinstance(user, dict):
        table.update(user)
    chosen = table.get(model) or table.get("default") or DEFAULT_PRICES["default"]
    return {key: Decimal(str(chosen.get(key, 0) or 0)) for key in ALL_PRICE_KEYS}


def estimate_cost(
    model: str,
    *,
    input_text_tokens: int = 0,
    input_audio_tokens: int = 0,
    input_image_tokens: int = 0,
    input_cached_tokens: int = 0,
    input_cached_text_tokens: int = 0,
    input_cached_audio_tokens: int = 0,
    input_cached_image_tokens: int = 0,
    output_text_tokens: int = 0,
    output_audio_tokens: int = 0,
) -> Decimal:
    """Estimated USD cost of the given token counts.

    Cached tokens are a subset of the input tokens, priced at the cached rates. When
    ``response.done`` gave their split (``cached_tokens_details``) it is used; cached tokens
    it leaves unexplained are split between text, audio and image in proportion to the input
    counts.
    """
    p = prices_for(model)
    inputs = {"text": input_text_tokens, "audio": input_audio_tokens, "image": input_image_tokens}
    cached = {
        "text": Decimal(min(max(input_cached_text_tokens, 0), input_text_tokens)),
        "audio": Decimal(min(max(input_cached_audio_tokens, 0), input_audio_tokens)),
        "image": Decimal(min(max(input_cached_image_tokens, 0), input_image_tokens)),
    }
    total_in = sum(inputs.values())
    rest = Decimal(min(max(input_cached_tokens, 0), total_in)) - sum(cached.values())
    if rest > 0 and total_in:
        for kind, n in inputs.items():
            cached[kind] = min(Decimal(n), cached[kind] + rest * n / total_in)
    cost = sum(
        (Decimal(n) - cached[kind]) * p[f"input_{kind}"] + cached[kind] * p[f"input_cached_{kind}"]
        for kind, n in inputs.items()
    ) + output_text_tokens * p["output_text"] + output_audio_tokens * p["output_audio"]
    return (Decimal(cost) / _MILLION).quantize(_COST_QUANTUM, rounding=ROUND_HALF_UP)


def session_cost(
    model: str, seconds: float | None, paused_seconds: float | None = None
) -> Decimal:
    """Estimated USD cost of a GPT-Live session's billable ``seconds`` (cumulative, as
    ``session.usage.updated`` reports them); ``paused_seconds`` of them are billed at the
    paused rate, the rest at the active rate (all of them when no split was reported)."""
    total = Decimal(str(max(seconds or 0, 0)))
    paused = min(Decimal(str(max(paused_seconds or 0, 0))), total)
    p = prices_for(model)
    cost = (total - paused) * p["session_active_minute"] + paused * p["session_paused_minute"]
    return (cost / 60).quantize(_COST_QUANTUM, rounding=ROUND_HALF_UP)


def cost_per_minute(cost: Decimal, seconds: float | None) -> Decimal | None:
    """``cost`` spread over the call's minutes (None for a call without a duration)."""
    if not seconds or seconds <= 0:
        return None
    return (cost * 60 / Decimal(str(seconds))).quantize(_COST_QUANTUM, rounding=ROUND_HALF_UP)
