"""voiceconv: OpenAI speech-to-speech agents on Twilio phone lines, as a Django app."""

from __future__ import annotations

from voiceconv.tools.registry import tool

__all__ = ["tool"]
__version__ = "0.1.0"
