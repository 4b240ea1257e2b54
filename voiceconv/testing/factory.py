"""A factory of Twilio stream clients that closes every client it made (no pytest needed)."""

from __future__ import annotations

from typing import Any

from voiceconv.testing.twilio_client import TwilioStreamClient

__all__ = ["TwilioStreamClientFactory"]


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
