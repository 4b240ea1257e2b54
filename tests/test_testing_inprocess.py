"""``voiceconv.testing.InProcessServer``: an ASGI application served by uvicorn inside the
test's own process, over real loopback HTTP and WebSockets; a clean stop (open connections
finished by the application, lifespan shutdown run) and clear start-up errors."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from typing import Any

import pytest
from websockets.asyncio.client import connect

from voiceconv.testing import InProcessServer, InProcessServerError


class App:
    """A small ASGI application that says what happened to it."""

    def __init__(self, *, fail_startup: bool = False) -> None:
        self.fail_startup = fail_startup
        self.events: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.events.append("startup")
                    kind = "failed" if self.fail_startup else "complete"
                    await send({"type": f"lifespan.startup.{kind}", "message": "no database"})
                    if self.fail_startup:
                        return
                elif message["type"] == "lifespan.shutdown":
                    self.events.append("shutdown")
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif scope["type"] == "http":
            await receive()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"hello " + scope["path"].encode()})
        elif scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.accept"})
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    # What a call's consumer does here: finish, write its records.
                    await asyncio.sleep(0.3)
                    self.events.append(f"websocket closed {message.get('code')}")
                    return
                await send({"type": "websocket.send", "text": message.get("text", "")})


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


async def test_serves_http_and_websockets_in_this_process_and_stops_cleanly() -> None:
    app = App()
    async with InProcessServer(app) as server:
        assert server.http_url.startswith("http://127.0.0.1:") and server.port
        assert await asyncio.to_thread(_get, server.http_url + "/twilio/incoming/") == (
            "hello /twilio/incoming/"
        )
        ws = await connect(server.ws_url + "/twilio/stream/", open_timeout=10)
        await ws.send("ping")
        assert await ws.recv() == "ping"
        # Left open: stopping the server closes it, and waits for the application to finish.
    assert app.events[0] == "startup"
    assert app.events[-1] == "shutdown"
    assert any(e.startswith("websocket closed") for e in app.events[1:-1]), app.events
    await ws.close()
    with socket.socket() as again:  # the port is free again (no listener left)
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", server.port))
    await server.stop()  # idempotent


async def test_a_busy_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(InProcessServerError, match=f"cannot listen on 127.0.0.1:{port}"):
            await InProcessServer(App(), port=port).start()


async def test_a_failed_lifespan_start_up_is_a_clear_error() -> None:
    app = App(fail_startup=True)
    with pytest.raises(InProcessServerError, match="could not start"):
        await InProcessServer(app).start()
    assert app.events == ["startup"]
