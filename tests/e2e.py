"""Helpers shared by the end-to-end tests (real server process, stand-in, stream client)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from websockets.exceptions import ConnectionClosed

from tests.conftest import AUTH_TOKEN, PUBLIC_URL
from voiceconv.testing import TwilioStreamClient
from voiceconv.testing.server import ServerProcess

CALLER = "+14155550123"
NUMBER = "+14155550100"

#: Clients a test opened; the ``hang_up_leftovers`` fixture hangs them up afterwards.
OPEN: list[TwilioStreamClient] = []


def track(client: TwilioStreamClient) -> TwilioStreamClient:
    """Remember ``client`` so that it is hung up after the test, whatever happened."""
    OPEN.append(client)
    return client


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` until it holds (for state on the stand-in's side)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)


async def play_until_closed(client: TwilioStreamClient, timeout: float = 10.0) -> None:
    """Let call time pass (silence frames) until the app closes the stream."""
    deadline = time.monotonic() + timeout
    while not client.closed.is_set():
        if time.monotonic() > deadline:
            raise AssertionError("the app did not end the call")
        try:
            await client.send_silence(100)
        except ConnectionClosed:
            break
        await asyncio.sleep(0.005)


async def enter_call(server: ServerProcess, **kwargs: Any) -> TwilioStreamClient:
    """Enter a call the way Twilio does (signed webhook, TwiML, signed stream) and start it.

    On the virtual clock unless ``realtime=True``: these tests let call time pass themselves."""
    kwargs.setdefault("realtime", False)
    client = await TwilioStreamClient.from_webhook(
        server.http_url,
        auth_token=AUTH_TOKEN,
        public_url=PUBLIC_URL,
        form={"From": CALLER, "To": NUMBER},
        **kwargs,
    )
    await track(client).start_call()
    return client


def offer(*names: str, targets: str | None = None) -> None:
    """Make the default agent offer exactly these tools (and, given ``targets``, set its
    transfer allow-list: one entry a line)."""
    from voiceconv.models import Agent, AgentTelephony, ToolDefinition

    agent = Agent.objects.get(is_default=True)
    agent.tools.set([ToolDefinition.objects.get_or_create(name=n)[0] for n in names])
    if targets is not None:
        AgentTelephony.objects.update_or_create(agent=agent, defaults={"transfer_targets": targets})


async def talk_until(
    client: TwilioStreamClient, predicate: Callable[[], bool], timeout: float = 20
) -> None:
    """Let call time pass (silence) until ``predicate()`` holds, the call still up."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not met"
        assert not client.closed.is_set(), "the app ended the call"
        await client.send_silence(100)
        await asyncio.sleep(0.005)


async def wait_for_call(call_sid: str, *, ended: bool = False, timeout: float = 5.0) -> Any:
    """The call's ``Call`` row once it exists (and has ended, with ``ended``)."""
    from voiceconv.models import Call

    deadline = time.monotonic() + timeout
    while True:
        call = await Call.objects.filter(twilio_call_sid=call_sid).afirst()
        if call is not None and (not ended or call.ended_at is not None):
            return call
        if time.monotonic() > deadline:
            raise AssertionError(f"call {call_sid} not recorded (ended={ended}): {call}")
        await asyncio.sleep(0.05)
