"""The second yardstick: a minimal Channels app, the cheapest bridge Django and Channels allow.

A signed TwiML view (``X-Twilio-Signature`` checked, ``<Connect><Stream>`` answered; no
database) and a Channels consumer with a tight receive loop that relays like
``bench.reference_relay`` does (one parse and one send per caller frame; media and a mark per
Realtime delta; ``clear`` on ``speech_started``), talking to the Realtime stand-in with a plain
``websockets`` client. No SDK, no database, no features. Served by uvicorn like the app, so the
benchmark table shows what the framework costs (against the bare relay) and what voiceconv adds
on top of it (against this).

``uvicorn bench.minimal_channels:application`` with ``OPENAI_BASE_URL``, ``OPENAI_API_KEY``,
``TWILIO_AUTH_TOKEN`` and ``PUBLIC_URL`` in the environment (``SSL_CERT_FILE`` for TLS).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

import django
from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["*"],
        SECRET_KEY="bench-minimal-channels",
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[],
        MIDDLEWARE=[],
        USE_TZ=True,
    )
    django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer
from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application
from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bench.reference_relay import SESSION, dumps, loads

PUBLIC_URL = os.environ.get("PUBLIC_URL", "").rstrip("/")
VALIDATOR = RequestValidator(os.environ.get("TWILIO_AUTH_TOKEN", ""))
OPENAI_URL = os.environ.get("OPENAI_BASE_URL", "").replace("http", "ws", 1).rstrip("/")
API_KEY = os.environ.get("OPENAI_API_KEY", "")


@csrf_exempt
async def incoming(request: HttpRequest) -> HttpResponse:
    """The signed incoming-call webhook: check the signature, answer the stream's TwiML."""
    url = PUBLIC_URL + request.get_full_path()
    signature = request.headers.get("X-Twilio-Signature", "")
    if not VALIDATOR.validate(url, request.POST.dict(), signature):
        return HttpResponse("invalid signature", status=403)
    stream = PUBLIC_URL.replace("https://", "wss://", 1) + "/twilio/stream/"
    body = (f'<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="{stream}">'
            f'</Stream></Connect></Response>')
    return HttpResponse(body, content_type="text/xml")


class RelayConsumer(AsyncWebsocketConsumer):
    """One Twilio stream ⇄ one Realtime session, receive loop without per-frame dispatch."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        stream_sid = ""
        while not stream_sid:
            message = await receive()
            if message["type"] != "websocket.receive":
                return
            msg = loads(message.get("text") or message.get("bytes") or b"{}")
            if msg.get("event") == "start":
                stream_sid = msg["streamSid"]
        url = OPENAI_URL + "/realtime?model=gpt-realtime-2.1"
        async with connect(url, additional_headers={"Authorization": f"Bearer {API_KEY}"},
                           compression=None, max_size=None, ping_interval=None) as openai:
            await openai.send(dumps({"type": "session.update", "session": SESSION}))
            await openai.send(dumps({"type": "response.create", "response": {
                "instructions": "Greet the caller briefly and ask how you can help."}}))
            media = '{"event":"media","streamSid":"' + stream_sid + '","media":{"payload":"'
            mark = '{"event":"mark","streamSid":"' + stream_sid + '","mark":{"name":"'
            clear = '{"event":"clear","streamSid":"' + stream_sid + '"}'

            async def upstream() -> None:
                while True:
                    message = await receive()
                    if message["type"] != "websocket.receive":
                        return
                    msg = loads(message["text"])
                    if msg["event"] == "media":
                        await openai.send('{"type":"input_audio_buffer.append","audio":"'
                                          + msg["media"]["payload"] + '"}')
                    elif msg["event"] == "stop":
                        return

            async def downstream() -> None:
                seq = 0
                async for raw in openai:
                    event = loads(raw)
                    kind = event["type"]
                    if kind == "response.output_audio.delta":
                        seq += 1
                        await send({"type": "websocket.send",
                                    "text": media + event["delta"] + '"}}'})
                        await send({"type": "websocket.send", "text": mark + str(seq) + '"}}'})
                    elif kind == "input_audio_buffer.speech_started":
                        await send({"type": "websocket.send", "text": clear})

            tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
            with contextlib.suppress(ConnectionClosed):
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await send({"type": "websocket.close", "code": 1000})


urlpatterns = [path("twilio/incoming/", incoming)]

application = ProtocolTypeRouter({
    "http": get_asgi_application(),
    "websocket": URLRouter([path("twilio/stream/", RelayConsumer.as_asgi())]),
})
