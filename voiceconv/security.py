"""Who gets in: Twilio request signatures and per-call stream tokens.

Pure functions over URLs, parameters and headers; the views and the consumer call them.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.core import signing
from django.core.signals import setting_changed
from django.http import HttpRequest
from twilio.request_validator import RequestValidator

from voiceconv.conf import voiceconv_settings
from voiceconv.exceptions import InsecureSetupWarning

logger = logging.getLogger("voiceconv.security")

TOKEN_SALT = "voiceconv.stream-token"


def auth_token() -> str:
    """The Twilio Auth Token used to check signatures ("" when not configured)."""
    return str(getattr(settings, "TWILIO_AUTH_TOKEN", "") or "")


#: The insecure settings already warned about in this process (re-armed when settings change).
_warned: set[str] = set()


def _warn_insecure(key: str, message: str) -> None:
    """One :class:`~voiceconv.exceptions.InsecureSetupWarning` per setting and process.

    Every webhook and stream asks; the warning says something about the process's setup, so it
    is shown once however many places ask (``warnings`` alone shows it once per call site).
    """
    if key in _warned:
        return
    _warned.add(key)
    warnings.warn(message, InsecureSetupWarning, stacklevel=3)


def _rearm(*, setting: str, **kwargs: Any) -> None:
    if setting in ("VOICECONV", "DEBUG"):
        _warned.clear()


setting_changed.connect(_rearm)


def signature_checks_enabled() -> bool:
    """Whether ``X-Twilio-Signature`` is checked (``VALIDATE_TWILIO_SIGNATURE``, on by default).

    Off outside ``DEBUG``, it warns once per process
    (:class:`~voiceconv.exceptions.InsecureSetupWarning`).
    """
    enabled = voiceconv_settings.VALIDATE_TWILIO_SIGNATURE
    if not enabled and not settings.DEBUG:
        _warn_insecure(
            "VALIDATE_TWILIO_SIGNATURE",
            "Twilio signature checks are off (VOICECONV['VALIDATE_TWILIO_SIGNATURE'] = False): "
            "anyone can post to the webhooks and open streams.",
        )
    return enabled


def stream_token_required() -> bool:
    """Whether a stream must carry the webhook's token (``REQUIRE_STREAM_TOKEN``, on by default).

    Off outside ``DEBUG``, it warns once per process
    (:class:`~voiceconv.exceptions.InsecureSetupWarning`).
    """
    required = voiceconv_settings.REQUIRE_STREAM_TOKEN
    if not required and not settings.DEBUG:
        _warn_insecure(
            "REQUIRE_STREAM_TOKEN",
            "The per-call stream token is not required (VOICECONV['REQUIRE_STREAM_TOKEN'] = "
            "False): anyone reaching the websocket can open an OpenAI session.",
        )
    return required


def public_origin(source: HttpRequest | Mapping[str, Any] | None = None) -> str:
    """The origin Twilio reaches us on: the PUBLIC_URL setting, else derived from ``source``.

    ``source`` is a Django request (the webhooks) or an ASGI scope (the stream handshake): both
    derive the origin the same way, honouring ``X-Forwarded-Proto`` and ``X-Forwarded-Host``
    (set by the TLS-terminating proxy in front of the app), else the ``Host`` header.
    """
    configured = voiceconv_settings.PUBLIC_URL.rstrip("/")
    if configured:
        return configured
    if source is None:
        return ""
    if isinstance(source, HttpRequest):
        headers = {k.lower(): v for k, v in source.headers.items()}
        scheme = source.scheme or "http"
        default_host = source.get_host()
    else:
        headers = {
            bytes(k).decode("latin-1").lower(): bytes(v).decode("latin-1")
            for k, v in source.get("headers") or []
        }
        scheme = {"ws": "http", "wss": "https"}.get(str(source.get("scheme") or ""), "https")
        default_host = headers.get("host", "")
    proto = headers.get("x-forwarded-proto", "").split(",")[0].strip()
    host = headers.get("x-forwarded-host", "").split(",")[0].strip()
    return f"{proto or scheme}://{host or default_host}"


def websocket_origin(http_origin: str) -> str:
    """``https://host`` → ``wss://host`` (``http`` → ``ws``)."""
    if http_origin.startswith("https://"):
        return "wss://" + http_origin[len("https://") :]
    if http_origin.startswith("http://"):
        return "ws://" + http_origin[len("http://") :]
    return http_origin


def validate_request_signature(request: HttpRequest) -> bool:
    """Check ``X-Twilio-Signature`` on a webhook request against the public URL."""
    token = auth_token()
    signature = request.headers.get("X-Twilio-Signature", "")
    if not token or not signature:
        return False
    url = public_origin(request) + request.get_full_path()
    params: Any = request.POST if request.method == "POST" else {}
    return bool(RequestValidator(token).validate(url, params, signature))


def validate_websocket_signature(scope: Mapping[str, Any], origin: str) -> bool:
    """Check Twilio's ``x-twilio-signature`` on a websocket upgrade.

    Twilio signs the ``wss://`` URL from the TwiML with no body parameters
    (``docs/protocols.md`` §T5); ``origin`` is the public ``https://`` origin (converted here;
    an ``http://`` origin is checked as ``wss://`` too, as the TwiML view always hands Twilio a
    ``wss://`` stream URL).
    """
    token = auth_token()
    headers: Iterable[tuple[bytes, bytes]] = scope.get("headers") or []
    signature = ""
    for name, value in headers:
        if name == b"x-twilio-signature":
            signature = value.decode("latin-1")
            break
    if not token or not signature:
        return False
    raw_path = scope.get("raw_path") or str(scope.get("path", "")).encode()
    # Twilio only connects (and signs) ``wss://`` URLs; the TwiML view always answers one.
    url = websocket_origin(origin).replace("ws://", "wss://", 1) + raw_path.decode("latin-1")
    if scope.get("query_string"):
        url += "?" + scope["query_string"].decode("latin-1")
    validator = RequestValidator(token)
    if validator.validate(url, {}, signature):
        return True
    # The validator also tries the URL with a default port, but takes 80 for any scheme other
    # than https; a stream URL written with ``:443`` needs that variant tried explicitly.
    parts = urlsplit(url)
    if parts.port is None:
        with_port = urlunsplit(parts._replace(netloc=parts.netloc + ":443"))
        return bool(validator.validate(with_port, {}, signature))
    return False


def make_stream_token(call_sid: str) -> str:
    """A short-lived token binding the media stream to the call the webhook answered."""
    return str(signing.dumps({"c": call_sid}, salt=TOKEN_SALT, compress=False))


def check_stream_token(token: str, call_sid: str) -> str | None:
    """None when ``token`` is valid for ``call_sid`` and unexpired, else the reason it is not."""
    if not token:
        return "missing stream token"
    try:
        max_age = timedelta(seconds=voiceconv_settings.timeouts.stream_token_max_age)
        data = signing.loads(token, salt=TOKEN_SALT, max_age=max_age)
    except signing.SignatureExpired:
        return "expired stream token"
    except signing.BadSignature:
        return "forged stream token"
    if not isinstance(data, dict) or data.get("c") != call_sid:
        return "stream token for another call"
    return None
