"""voiceconv: OpenAI speech-to-speech agents on Twilio phone lines, as a Django app."""

from __future__ import annotations

from typing import Any

__all__ = ["tool"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # ``from voiceconv import tool`` without importing Django models at package import.
    if name == "tool":
        from voiceconv.tools import tool

        return tool
    raise AttributeError(name)
