"""Channels websocket routes a project includes in its ``URLRouter``.

The Twilio media stream is guarded by Twilio's signature and the per-call stream token (its
handshake has no Origin header and no session cookie), so it is not wrapped. The admin's live
monitor and the browser softphone are for logged-in staff: they are wrapped here, in
``AllowedHostsOriginValidator`` and ``AuthMiddlewareStack``, so including these routes
unwrapped is safe.
"""

from __future__ import annotations

from typing import Any

# Loaded with the websocket routes, at server start-up: importing the SDK takes seconds, and
# done by the first call it would stall that call's opening (and every call's audio meanwhile).
import openai  # noqa: F401
from channels.auth import AuthMiddlewareStack
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path

from voiceconv.consumers import MediaStreamConsumer
from voiceconv.monitor import LiveMonitorConsumer
from voiceconv.softphone import BrowserCallConsumer

_monitor_app = AuthMiddlewareStack(LiveMonitorConsumer.as_asgi())
_softphone_app = AuthMiddlewareStack(BrowserCallConsumer.as_asgi())


async def _monitor(scope: Any, receive: Any, send: Any) -> Any:
    """The monitor behind AllowedHostsOriginValidator (reading ALLOWED_HOSTS per connection)
    and AuthMiddlewareStack."""
    return await AllowedHostsOriginValidator(_monitor_app)(scope, receive, send)


async def _softphone(scope: Any, receive: Any, send: Any) -> Any:
    """The browser softphone's stream, wrapped like the monitor."""
    return await AllowedHostsOriginValidator(_softphone_app)(scope, receive, send)


# Channels' URLRouter takes Django's path() with ASGI apps; django-stubs types path() for views.
websocket_urlpatterns = [
    path(
        "twilio/stream/", MediaStreamConsumer.as_asgi(), name="voiceconv-stream"  # type: ignore[arg-type]
    ),
    path("voiceconv/live/", _monitor, name="voiceconv-live"),
    path("voiceconv/live/<str:call_sid>/", _monitor, name="voiceconv-live-call"),
    path("voiceconv/softphone/stream/", _softphone, name="voiceconv-softphone-stream"),
]
