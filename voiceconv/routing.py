"""Channels websocket routes a project includes in its ``URLRouter``."""

from __future__ import annotations

# Loaded with the websocket routes, at server start-up: importing the SDK takes seconds, and
# done by the first call it would stall that call's opening (and every call's audio meanwhile).
import openai  # noqa: F401
from django.urls import path

from voiceconv.consumers import MediaStreamConsumer

websocket_urlpatterns = [
    path("twilio/stream/", MediaStreamConsumer.as_asgi(), name="voiceconv-stream"),
]
