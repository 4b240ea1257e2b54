"""Prices as the models use them: re-exported from :mod:`voiceconv.pricing`, the one dated table
(kept here so that ``from voiceconv.models.pricing import estimate_cost`` keeps working)."""

from __future__ import annotations

from voiceconv.pricing import DEFAULT_PRICES, estimate_cost, prices_for, session_cost

__all__ = ["DEFAULT_PRICES", "estimate_cost", "prices_for", "session_cost"]
