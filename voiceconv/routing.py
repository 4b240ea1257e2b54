"""Channels websocket routes a project includes in its ``URLRouter``."""

from __future__ import annotations

from django.urls import path

from voiceconv.consumers import MediaStreamConsumer

websocket_urlpatterns = [
    path("twilio/stream/", MediaStreamConsumer.as_asgi(), name="voiceconv-stream"),
]
