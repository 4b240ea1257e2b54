"""voiceconv's errors and warnings, in one family.

Every error voiceconv raises on purpose derives from :class:`VoiceconvError`.
"""

from __future__ import annotations

__all__ = ["ToolArgumentsError", "VoiceconvError"]


class VoiceconvError(Exception):
    """Base class of voiceconv's own errors."""


class ToolArgumentsError(VoiceconvError, ValueError):
    """The model's arguments for a tool do not fit the tool's schema."""
