"""pytest fixtures wrapping the voiceconv test kit.

Load them from a ``conftest.py``::

    pytest_plugins = ["voiceconv.testing.fixtures"]
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from voiceconv.testing.factory import TwilioStreamClientFactory
from voiceconv.testing.live_server import GPTLiveStandIn
from voiceconv.testing.realtime_server import RealtimeStandIn

__all__ = [
    "TwilioStreamClientFactory",
    "gpt_live_standin",
    "realtime_standin",
    "twilio_stream_client",
]


@pytest_asyncio.fixture
async def twilio_stream_client() -> AsyncIterator[TwilioStreamClientFactory]:
    """Factory for ``TwilioStreamClient``s; every client it made is closed after the test.

    ``client = twilio_stream_client(url, auth_token=...)``, then ``await client.start_call()``;
    or ``await twilio_stream_client.from_webhook(live_server_url, auth_token=...)``.
    """
    factory = TwilioStreamClientFactory()
    try:
        yield factory
    finally:
        await factory.aclose()


@pytest_asyncio.fixture
async def realtime_standin() -> AsyncIterator[RealtimeStandIn]:
    """A started ``RealtimeStandIn`` on loopback (API key ``"test-key"``), stopped afterwards.

    Point the SDK at it with ``base_url=realtime_standin.base_url`` (or ``OPENAI_BASE_URL``);
    script it through ``realtime_standin.responses`` before the call starts.
    """
    async with RealtimeStandIn(api_key="test-key") as standin:
        yield standin


@pytest_asyncio.fixture
async def gpt_live_standin() -> AsyncIterator[GPTLiveStandIn]:
    """A started ``GPTLiveStandIn`` on loopback (API key ``"test-key"``), stopped afterwards.

    Point the SDK at it with ``base_url=gpt_live_standin.base_url`` (or ``OPENAI_BASE_URL``);
    script it through ``gpt_live_standin.answers`` before the call starts.
    """
    async with GPTLiveStandIn(api_key="test-key") as standin:
        yield standin
