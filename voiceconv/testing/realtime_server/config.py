"""The Realtime session's configuration: the defaults the live service reports, partial updates."""

from __future__ import annotations

import copy
import secrets
import time
from collections.abc import Mapping
from typing import Any

from voiceconv.testing.audio import BYTES_PER_MS

__all__ = ["DEFAULT_INSTRUCTIONS", "REASONING_MODEL_PREFIXES", "default_session_config"]

DEFAULT_INSTRUCTIONS = (
    "Your knowledge cutoff is 2023-10. You are a helpful, witty, and friendly AI. "
    "Act like a human, but remember that you aren't a human."
)
REASONING_MODEL_PREFIXES = ("gpt-realtime-2",)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


def default_session_config(model: str) -> dict[str, Any]:
    """The full default session the live service reports in ``session.created``."""
    config: dict[str, Any] = {
        "type": "realtime",
        "object": "realtime.session",
        "id": _new_id("sess"),
        "model": model,
        "output_modalities": ["audio"],
        "instructions": DEFAULT_INSTRUCTIONS,
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "expires_at": int(time.time()) + 3600,
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": _default_turn_detection("server_vad"),
            },
            "output": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "voice": "marin",
                "speed": 1.0,
            },
        },
        "include": None,
    }
    if model.startswith(REASONING_MODEL_PREFIXES):
        config["reasoning"] = {"effort": "low"}
    return config


def _default_turn_detection(kind: str) -> dict[str, Any]:
    if kind == "semantic_vad":
        return {
            "type": "semantic_vad",
            "eagerness": "auto",
            "create_response": True,
            "interrupt_response": True,
        }
    return {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 500,
        "idle_timeout_ms": None,
        "create_response": True,
        "interrupt_response": True,
    }


def _bytes_per_ms(audio_format: Mapping[str, Any] | None) -> int:
    """Bytes per millisecond of a GA audio format object (PCM is 16-bit 24 kHz)."""
    if audio_format and audio_format.get("type") == "audio/pcm":
        return 48
    return BYTES_PER_MS


def _merge_session(current: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Apply a partial GA ``session`` update: nested objects merge, other values replace."""
    merged = copy.deepcopy(current)
    for key, value in update.items():
        if key == "audio" and isinstance(value, Mapping):
            for side in ("input", "output"):
                if isinstance(value.get(side), Mapping):
                    target = merged["audio"].setdefault(side, {})
                    for sub_key, sub_value in value[side].items():
                        target[sub_key] = _merge_audio_field(
                            sub_key, target.get(sub_key), sub_value
                        )
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _merge_audio_field(key: str, old: Any, new: Any) -> Any:
    if key == "turn_detection" and isinstance(new, Mapping):
        kind = new.get("type", (old or {}).get("type", "server_vad"))
        base = (
            old
            if isinstance(old, dict) and old.get("type") == kind
            else _default_turn_detection(kind)
        )
        return {**base, **copy.deepcopy(dict(new))}
    if key == "noise_reduction" and isinstance(new, Mapping):
        base = old if isinstance(old, dict) else {"type": "near_field"}
        return {**base, **copy.deepcopy(dict(new))}
    return copy.deepcopy(new)
