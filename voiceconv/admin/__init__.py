"""Admin for voiceconv: agents, tool definitions, and read-only call records."""
