"""Admin for voiceconv: agents, tool definitions, and read-only call records."""

from voiceconv.admin import agents, calls, tools  # noqa: F401
