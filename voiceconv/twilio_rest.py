"""Twilio's REST API for live calls: hang up and transfer.

Credentials come from the Django settings ``TWILIO_ACCOUNT_SID`` and ``TWILIO_AUTH_TOKEN``.
``VOICECONV["TWILIO_API_BASE"]`` (for example ``"http://127.0.0.1:8099"``) sends every request to
another origin instead of ``https://*.twilio.com``: for tests and on-premises proxies.

These functions block; the consumer runs them in a worker thread.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from voiceconv.conf import voiceconv_settings
from voiceconv.exceptions import ConfigurationError
from voiceconv.phone import transfer_target
from voiceconv.twiml import dial

__all__ = [
    "REQUEST_TIMEOUT",
    "RebasingHttpClient",
    "get_twilio_client",
    "hangup_call",
    "transfer_call",
]

logger = logging.getLogger("voiceconv.twilio")

#: Seconds to wait for Twilio's REST API before giving up.
REQUEST_TIMEOUT = 10.0
#: Twilio error codes meaning "the call is already over": not found, not in progress.
_ALREADY_ENDED = {20404, 21220}


class RebasingHttpClient(TwilioHttpClient):  # type: ignore[misc]  # twilio ships no types
    """A ``TwilioHttpClient`` that sends every request to ``base_url`` (scheme, host, port).

    The path and query of each request are kept; a path in ``base_url`` is prefixed.
    """

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(
                f"VOICECONV['TWILIO_API_BASE'] must be an http(s) origin, got {base_url!r}"
            )
        self.base = parts
        super().__init__(**kwargs)

    def rebase(self, url: str) -> str:
        parts = urlsplit(url)
        path = self.base.path.rstrip("/") + parts.path
        return urlunsplit((self.base.scheme, self.base.netloc, path, parts.query, ""))

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        return super().request(method, self.rebase(url), *args, **kwargs)


def get_twilio_client() -> Client:
    """A Twilio REST client from the Django settings; close ``client.http_client.session``."""
    account_sid = getattr(settings, "TWILIO_ACCOUNT_SID", "") or ""
    auth_token = getattr(settings, "TWILIO_AUTH_TOKEN", "") or ""
    for key, value in (("TWILIO_ACCOUNT_SID", account_sid), ("TWILIO_AUTH_TOKEN", auth_token)):
        if not value:
            raise ConfigurationError(
                f"The {key} setting is required to control calls through Twilio's REST API."
            )
    base = voiceconv_settings.TWILIO_API_BASE
    http_client: TwilioHttpClient = (
        RebasingHttpClient(base, timeout=REQUEST_TIMEOUT)
        if base
        else TwilioHttpClient(timeout=REQUEST_TIMEOUT)
    )
    return Client(account_sid, auth_token, http_client=http_client)


@contextmanager
def _client() -> Iterator[Client]:
    client = get_twilio_client()
    try:
        yield client
    finally:
        session = getattr(client.http_client, "session", None)
        if session is not None:
            session.close()


def hangup_call(call_sid: str) -> bool:
    """End the call. True when it is over (also if it had already ended), else False.

    Failures (network, credentials, Twilio errors) are logged and give False.
    """
    try:
        with _client() as client:
            client.calls(call_sid).update(status="completed")
    except TwilioRestException as exc:
        if exc.status == 404 or exc.code in _ALREADY_ENDED:
            logger.info("Call %s had already ended (Twilio %s).", call_sid, exc.code or exc.status)
            return True
        logger.error(
            "Hanging up call %s failed: Twilio %s %s: %s",
            call_sid, exc.status, exc.code, exc.msg,
        )
        return False
    except Exception as exc:  # credentials, network (requests), bad responses
        logger.error("Hanging up call %s failed: %s: %s", call_sid, type(exc).__name__, exc)
        return False
    logger.info("Hung up call %s.", call_sid)
    return True


def transfer_call(call_sid: str, target: str) -> None:
    """Replace the call's TwiML with a ``<Dial>`` to ``target`` (E.164 number or SIP URI).

    Twilio then tears down the media stream. Raises ``InvalidPhoneNumberError`` (a
    ``ValueError``) for a bad target, ``ConfigurationError`` without credentials,
    ``TwilioRestException`` when Twilio refuses, and the HTTP layer's errors when it cannot be
    reached.
    """
    destination = transfer_target(target)
    with _client() as client:
        client.calls(call_sid).update(twiml=dial(destination))
    logger.info("Transferred call %s to %s.", call_sid, destination)
