"""voiceconv's models: agents, calls and transcripts; tool definitions and invocations."""

from voiceconv.models.calls import Agent, Call, TranscriptEntry
from voiceconv.models.telephony import AgentTelephony, Recording, WarmTransfer
from voiceconv.models.tools import ToolDefinition, ToolInvocation

__all__ = [
    "Agent",
    "AgentTelephony",
    "Call",
    "Recording",
    "ToolDefinition",
    "ToolInvocation",
    "TranscriptEntry",
    "WarmTransfer",
]
