"""``{% softphone_panel agent %}``: the browser softphone's "Call this agent" panel.

Renders nothing for users who may not place browser calls (see
:func:`voiceconv.softphone.may_place_browser_call`)::

    {% load voiceconv_softphone %}
    {% softphone_panel agent %}
"""

from __future__ import annotations

from typing import Any

from django import template

from voiceconv.conf import voiceconv_settings
from voiceconv.softphone import may_place_browser_call

register = template.Library()

KEYPAD = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "0", "#")


@register.inclusion_tag("voiceconv/softphone_panel.html", takes_context=True)
def softphone_panel(context: template.Context, agent: Any = None) -> dict[str, Any]:
    """The panel for ``agent`` (an ``Agent``; ``None`` = the default agent)."""
    request = context.get("request")
    user = getattr(request, "user", None)
    return {
        "allowed": may_place_browser_call(user),
        "agent": agent,
        "agent_slug": getattr(agent, "slug", "") or "",
        "ws_path": voiceconv_settings.SOFTPHONE_PATH,
        "keypad": KEYPAD,
    }
