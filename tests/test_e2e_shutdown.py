"""Graceful shutdown without a drain (``DRAIN_SECONDS`` 0, or a drain whose time is up):
SIGTERM finalises calls in progress and writes every record."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import ROOT, server_env
from tests.e2e import enter_call, eventually, wait_for_call
from voiceconv.testing import RealtimeStandIn, ScriptedResponse
from voiceconv.testing.server import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("server_kind", ["daphne", "uvicorn"])
async def test_sigterm_finalises_calls_in_progress(
    django_db_blocker: pytest.FixtureRequest, standin: RealtimeStandIn, standin_port: int,
    server_kind: str,
) -> None:
    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        env = server_env(standin_port, DRAIN_SECONDS=0)
    server = ServerProcess(env=env, cwd=ROOT, server=server_kind).start()  # type: ignore[arg-type]
    try:
        standin.responses.append(ScriptedResponse(text="Welcome to the shop."))
        client = await enter_call(server)
        session = await standin.wait_for_session(0, timeout=10)
        await eventually(lambda: any(e["type"] == "response.done" for e in session.sent))
        await client.send_silence(2000)  # the greeting is heard
        await asyncio.sleep(0.2)
        t0 = asyncio.get_running_loop().time()
        code = await asyncio.to_thread(server.stop, 15.0)
        print(f"server stopped in {asyncio.get_running_loop().time() - t0:.2f} s")
        # uvicorn ends by re-raising SIGTERM once its graceful shutdown (and lifespan) is done.
        assert code in ((0,) if server_kind == "daphne" else (0, -15)), server.log_tail()
        assert client.closed.is_set() or await client.wait_closed(timeout=2) is not None
        assert session.closed.is_set()  # the OpenAI side was closed too
        call = await wait_for_call(client.call_sid, ended=True)
        assert call.end_reason == "shutdown"
        texts = [e.text async for e in call.transcript_entries.all()]
        assert "Welcome to the shop." in texts
    finally:
        server.stop()
