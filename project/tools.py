"""The example project's tools: the ancestor package's README example, unchanged."""

from __future__ import annotations

from voiceconv import tool


@tool
def get_time(state=None, connection=None):
    """Get the current time."""
    from datetime import datetime
    return {"time": datetime.now().strftime("%H:%M")}
