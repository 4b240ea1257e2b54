"""Pre-connect while the phone rings, end to end: two server processes of the example project
(daphne) on one database, the real openai SDK, the Realtime stand-in and the Twilio stream
client, over real sockets on loopback.

- ``ringing_server`` pre-connects (its orphan timeout is short); the session-wide ``e2e_server``
  stands for another process of the same deployment, where a stream may land instead.
- The webhook is posted like Twilio posts it; the stream is started only once the stand-in has
  seen what the test is about (the phone is still ringing until then).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from asgiref.sync import sync_to_async

from tests.conftest import AUTH_TOKEN, PUBLIC_URL, ROOT, server_env
from tests.e2e import CALLER, NUMBER, eventually, track, wait_for_call
from voiceconv.testing import RealtimeStandIn, ScriptedResponse, TwilioStreamClient
from voiceconv.testing.server import ServerProcess

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("hang_up_leftovers"),
]

#: The ringing server's PRECONNECT_TIMEOUT (s): long enough for a stream to come on a loaded
#: machine, short enough for the orphan test.
ORPHAN_TIMEOUT = 6.0
GREETING = "Hello, you called early."


@pytest.fixture(scope="module")
def ringing_server(
    django_db_setup: None, django_db_blocker: pytest.FixtureRequest, standin_port: int
) -> Iterator[ServerProcess]:
    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        env = server_env(standin_port, PRECONNECT_TIMEOUT=ORPHAN_TIMEOUT)
    with ServerProcess(env=env, cwd=ROOT) as server:
        yield server


def set_preconnect(on: bool) -> None:
    from voiceconv.models import Agent

    assert Agent.objects.filter(is_default=True).update(preconnect=on) == 1


async def ring(server: ServerProcess, stream_to: ServerProcess | None = None
               ) -> TwilioStreamClient:
    """The incoming-call webhook, answered; the stream is not opened yet."""
    client = await TwilioStreamClient.from_webhook(
        server.http_url, auth_token=AUTH_TOKEN, public_url=PUBLIC_URL,
        form={"From": CALLER, "To": NUMBER}, realtime=False,
        stream_base=stream_to.ws_url if stream_to is not None else None,
    )
    return track(client)


async def greeted(client: TwilioStreamClient, standin: RealtimeStandIn, index: int) -> None:
    """The call's greeting comes from the stand-in's session ``index`` and is played."""
    session = await standin.wait_for_session(index, timeout=10)
    await session.expect_event("response.create", timeout=10)
    await client.send_silence(200)
    await eventually(lambda: any(e["type"] == "response.done" for e in session.sent), 10)
    await client.wait_for_media(8, timeout=10)


async def test_the_stream_adopts_the_session_opened_while_ringing(
    ringing_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    await sync_to_async(set_preconnect)(True)
    standin.responses.append(ScriptedResponse(text=GREETING))
    client = await ring(ringing_server)
    # The phone rings: the session is open and configured before any stream exists.
    session = await standin.wait_for_session(0, timeout=10)
    update = await session.expect_event("session.update", timeout=10)
    assert update["session"]["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    await eventually(lambda: any(e["type"] == "session.updated" for e in session.sent), 10)
    assert not any(e["type"] == "response.create" for e in session.received)

    await client.start_call()
    await client.send_silence(100)
    await greeted(client, standin, 0)
    await client.send_silence(500)
    await client.hang_up()
    call = await wait_for_call(client.call_sid, ended=True)
    # One connection for the call, configured once; the stream's audio went to it.
    assert len(standin.sessions) == 1
    assert [e["type"] for e in session.received].count("session.update") == 1
    assert session.appends
    assert session.protocol_violations == [] and client.violations == []
    assert call.session_ready_at is not None and call.first_audio_at is not None
    entries = await sync_to_async(list)(call.transcript_entries.filter(role="assistant"))
    assert [e.text for e in entries] == [GREETING]


async def test_an_agent_without_pre_connect_opens_its_session_when_the_stream_starts(
    ringing_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    await sync_to_async(set_preconnect)(False)
    client = await ring(ringing_server)
    await asyncio.sleep(1.0)  # ringing: time enough for a pre-connect, were there one
    assert standin.sessions == []
    await client.start_call()
    await client.send_silence(100)
    await greeted(client, standin, 0)
    await client.hang_up()
    await wait_for_call(client.call_sid, ended=True)
    assert len(standin.sessions) == 1


async def test_a_pre_connected_session_whose_stream_never_comes_is_closed(
    ringing_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    await sync_to_async(set_preconnect)(True)
    await ring(ringing_server)
    session = await standin.wait_for_session(0, timeout=10)
    await session.expect_event("session.update", timeout=10)
    await asyncio.wait_for(session.closed.wait(), ORPHAN_TIMEOUT + 15)
    assert len(standin.sessions) == 1
    assert "pre-connected session closed (no stream within" in ringing_server.log_text()


async def test_a_stream_on_another_process_opens_its_own_and_the_orphan_is_closed(
    ringing_server: ServerProcess, e2e_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    await sync_to_async(set_preconnect)(True)
    standin.responses.append(ScriptedResponse(text=GREETING))
    client = await ring(ringing_server, stream_to=e2e_server)
    orphan = await standin.wait_for_session(0, timeout=10)
    await orphan.expect_event("session.update", timeout=10)
    await client.start_call()  # the stream lands on the other process
    await client.send_silence(100)
    await greeted(client, standin, 1)
    own = standin.sessions[1]
    assert own.appends and not orphan.appends
    assert not any(e["type"] == "response.create" for e in orphan.received)
    # The ringing process closes its orphan after its timeout; the call goes on.
    await asyncio.wait_for(orphan.closed.wait(), ORPHAN_TIMEOUT + 15)
    assert not own.closed.is_set()
    await client.send_silence(200)
    await client.hang_up()
    call = await wait_for_call(client.call_sid, ended=True)
    assert call.end_reason == "caller_hung_up"


def edit_default_agent(instructions: str) -> None:
    from voiceconv.models import Agent

    agent = Agent.objects.get(is_default=True)
    agent.instructions = instructions
    agent.save()


async def test_an_agent_edited_while_ringing_gets_a_session_with_its_new_configuration(
    ringing_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    await sync_to_async(set_preconnect)(True)
    client = await ring(ringing_server)
    stale = await standin.wait_for_session(0, timeout=10)
    await stale.expect_event("session.update", timeout=10)
    await sync_to_async(edit_default_agent)("Speak like a pirate.")
    await client.start_call()
    await client.send_silence(100)
    # The stream does not adopt a session configured before the edit: it opens its own.
    await greeted(client, standin, 1)
    fresh = standin.sessions[1]
    update = next(e for e in fresh.received if e["type"] == "session.update")
    assert "Speak like a pirate." in update["session"]["instructions"]
    assert fresh.appends and not stale.appends
    await asyncio.wait_for(stale.closed.wait(), ORPHAN_TIMEOUT + 15)
    assert "configured differently" in ringing_server.log_text()
    await client.hang_up()
    await wait_for_call(client.call_sid, ended=True)
