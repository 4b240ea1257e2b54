"""voiceconv's models: agents, calls and transcripts; tool definitions and invocations."""

from voiceconv.models.calls import Agent, Call, TranscriptEntry
from voiceconv.models.tools import ToolDefinition, ToolInvocation

__all__ = ["Agent", "Call", "ToolDefinition", "ToolInvocation", "TranscriptEntry"]
