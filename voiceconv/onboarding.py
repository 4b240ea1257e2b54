"""What an operator needs to hook a server up: the URLs for the Twilio console, whether the
credentials are configured, what to do next. Used by the admin's empty lists and by a project's
home page (the example project's ``templates/home.html``)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from django.conf import settings
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse

from voiceconv.conf import voiceconv_settings
from voiceconv.security import auth_token, public_origin, signature_checks_enabled

__all__ = ["Credential", "TwilioConsoleURLs", "credentials", "twilio_console_urls"]


@dataclass(frozen=True)
class TwilioConsoleURLs:
    """What to paste into a Twilio number's *Voice configuration*."""

    #: The public origin these are built on (``PUBLIC_URL``, else from the request).
    origin: str
    #: *A call comes in*: Webhook, HTTP POST.
    incoming: str
    #: *Call status changes*.
    status: str
    #: The media stream the webhook's TwiML opens (for reference; Twilio is told by TwiML).
    stream: str
    #: Whether ``origin`` comes from ``PUBLIC_URL`` (else it was guessed from the request).
    configured: bool


def _reverse(name: str, fallback: str) -> str:
    try:
        return str(reverse(name))
    except NoReverseMatch:
        return fallback


def twilio_console_urls(request: HttpRequest | None = None) -> TwilioConsoleURLs:
    """The webhook and status-callback URLs for this server's public origin."""
    configured = bool(voiceconv_settings.PUBLIC_URL.strip())
    origin = public_origin(request)
    ws_origin = origin.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    return TwilioConsoleURLs(
        origin=origin,
        incoming=origin + _reverse("voiceconv:incoming-call", "/twilio/incoming/"),
        status=origin + _reverse("voiceconv:call-status", "/twilio/status/"),
        stream=ws_origin + (voiceconv_settings.STREAM_PATH or "/twilio/stream/"),
        configured=configured,
    )


@dataclass(frozen=True)
class Credential:
    """One credential the server needs, and whether it is set (never its value)."""

    name: str
    configured: bool
    purpose: str


def credentials() -> list[Credential]:
    """The OpenAI and Twilio credentials, each configured or missing."""
    openai_key = os.environ.get("OPENAI_API_KEY") or getattr(settings, "OPENAI_API_KEY", "")
    signatures = signature_checks_enabled()
    return [
        Credential(
            "OPENAI_API_KEY",
            bool(openai_key) or voiceconv_settings.OPENAI_CLIENT_FACTORY is not None,
            "the speech model: without it every call ends in the apology",
        ),
        Credential(
            "TWILIO_AUTH_TOKEN",
            bool(auth_token()),
            "checks Twilio's signatures: without it every webhook is refused"
            if signatures
            else "checks Twilio's signatures (switched off by VALIDATE_TWILIO_SIGNATURE)",
        ),
        Credential(
            "TWILIO_ACCOUNT_SID",
            bool(getattr(settings, "TWILIO_ACCOUNT_SID", "")),
            "Twilio's REST API, for hanging up and transferring calls",
        ),
    ]
