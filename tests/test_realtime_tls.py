"""The OpenAI leg over TLS: every call's connection shares one TLS context.

``websockets`` builds a fresh default context (the system's CA bundle, loaded again) for each
``wss://`` connection opened without one; the backends hand the SDK one per process instead.
Checked against the stand-in served over real TLS with a self-signed certificate.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from openai import AsyncOpenAI

from voiceconv import realtime
from voiceconv.realtime import OpenAIRealtimeBackend, build_session_config, websocket_options
from voiceconv.testing import RealtimeStandIn

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@pytest.fixture
def certificate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """A server context for 127.0.0.1, trusted by clients through ``SSL_CERT_FILE``."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    monkeypatch.setattr(realtime, "_tls_contexts", {})
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    return server


def _context_of(backend: object) -> ssl.SSLContext:
    conn = backend.connection  # type: ignore[attr-defined]
    ws = conn._connection
    ssl_object = ws.transport.get_extra_info("ssl_object")
    assert ssl_object is not None, "the connection is not TLS"
    context: ssl.SSLContext = ssl_object.context
    return context


async def test_realtime_calls_share_one_tls_context(certificate: ssl.SSLContext) -> None:
    async with RealtimeStandIn(api_key="sk-test", ssl_context=certificate) as standin:
        assert standin.base_url.startswith("https://")
        client = AsyncOpenAI(api_key="sk-test", base_url=standin.base_url)
        backends = [OpenAIRealtimeBackend(client, "gpt-realtime-2.1") for _ in range(3)]
        try:
            for backend in backends:
                await backend.connect()
            contexts = {id(_context_of(b)) for b in backends}
            assert contexts == {id(websocket_options(client)["ssl"])}
            # The session works over it: the strict stand-in takes the configuration.
            await backends[0].send(json.dumps(
                {"type": "session.update", "session": build_session_config()}))
            session = await standin.wait_for_session(0)
            deadline = asyncio.get_running_loop().time() + 10
            while not session.received:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.02)
        finally:
            for backend in backends:
                await backend.close()
    assert session.protocol_violations == []
    assert [e["type"] for e in session.received] == ["session.update"]


def test_plain_sockets_take_no_tls_options() -> None:
    client = AsyncOpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1")
    assert websocket_options(client) == {}
    tls = AsyncOpenAI(api_key="sk-test", base_url="https://example.invalid/v1")
    assert websocket_options(tls)["ssl"] is websocket_options(tls)["ssl"]
