"""ASGI entry point: HTTP through Django, Twilio Media Streams through Channels."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from voiceconv.asgi import WebhookFastPath  # noqa: E402
from voiceconv.health import DrainingMiddleware  # noqa: E402
from voiceconv.routing import websocket_urlpatterns  # noqa: E402

# Twilio's Media Streams handshake carries no Origin header and no session cookie, so the
# stream route is not wrapped in AllowedHostsOriginValidator/AuthMiddlewareStack; it is
# guarded by Twilio's handshake signature and the per-call stream token instead (the admin's
# live monitor, also in websocket_urlpatterns, is wrapped by voiceconv itself).
# DrainingMiddleware: on SIGTERM, refuse new calls and let live ones finish (DRAIN_SECONDS).
# WebhookFastPath: Twilio's signed webhooks skip the HTTP middleware (a dozen hops to the
# shared thread per request under ASGI); everything else goes through it as usual.
application = DrainingMiddleware(
    ProtocolTypeRouter(
        {
            "http": WebhookFastPath(django_asgi_app),
            "websocket": URLRouter(websocket_urlpatterns),
        }
    )
)
