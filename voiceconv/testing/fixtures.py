"""pytest fixtures wrapping the voiceconv test kit.

Load them from a ``conftest.py``::

    pytest_plugins = ["voiceconv.testing.fixtures"]
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

from voiceconv.testing.realtime_server import RealtimeStandIn
from voiceconv.testing.twilio_client import TwilioStreamClient

__all__ = ["TwilioStreamClientFactory", "realtime_standin", "twilio_stream_client"]


class TwilioStreamClientFactory:
    """Makes ``TwilioStreamClient``s for one test and closes them all at teardown."""

    def __init__(self, **defaults: Any) -> None:
        self.defaults = defaults
        self.clients: list[TwilioStreamClient] = []

    def __call__(self, url: str, **kwargs: Any) -> TwilioStreamClient:
        """A new, unconnected client for ``url`` (``defaults`` apply unless overridden)."""
        client = TwilioStreamClient(url, **{**self.defaults, **kwargs})
        self.clients.append(client)
        return client

    async def start_call(self, url: str, **kwargs: Any) -> TwilioStreamClient:
        """A new client that has connected and sent ``connected`` and ``start``."""
        return await self(url, **kwargs).start_call()

    async def from_webhook(self, http_base: str, **kwargs: Any) -> TwilioStreamClient:
        """A client for the stream the incoming-call webhook answers (see ``from_webhook``)."""
        client = await TwilioStreamClient.from_webhook(http_base, **{**self.defaults, **kwargs})
        self.clients.append(client)
        return client

    async def aclose(self) -> None:
        """Close every client this factory made."""
        for client in self.clients:
            await client.close()


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
