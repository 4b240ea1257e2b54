"""Entering a call the way Twilio does: the signed incoming-call webhook and its TwiML."""

from __future__ import annotations

import asyncio
import logging
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass

from twilio.request_validator import RequestValidator

from voiceconv.testing.twilio_client.records import TwilioWebhookError, new_sid

__all__ = ["WebhookAnswer", "post_webhook", "wss_form"]

logger = logging.getLogger("voiceconv.testing.twilio_client")


@dataclass(frozen=True)
class WebhookAnswer:
    """What the webhook answered, and where and how to open its stream."""

    call_sid: str
    account_sid: str
    #: The form posted.
    form: dict[str, str]
    twiml: str
    #: The ``<Stream url>`` mapped onto the loopback server, path kept.
    stream_url: str
    #: The TwiML's own ``wss://`` URL, which Twilio signs.
    signature_url: str
    #: The ``<Parameter>``s of the stream.
    parameters: dict[str, str]
    #: ``<Connect action>``, if any.
    connect_action: str | None


async def post_webhook(
    http_base: str,
    *,
    webhook_path: str = "/twilio/incoming/",
    form: Mapping[str, str] | None = None,
    auth_token: str | None = None,
    public_url: str | None = None,
    stream_base: str | None = None,
    timeout: float = 10.0,
    call_sid: str | None = None,
    account_sid: str | None = None,
) -> WebhookAnswer:
    """POST the incoming-call webhook like Twilio and read the stream out of its TwiML.

    See :meth:`~voiceconv.testing.twilio_client.TwilioStreamClient.from_webhook`.
    """
    call_sid = call_sid or new_sid("CA")
    account_sid = account_sid or new_sid("AC")
    fields = {
        "AccountSid": account_sid,
        "ApiVersion": "2010-04-01",
        "CallSid": call_sid,
        "CallStatus": "ringing",
        "Called": "+14155550199",
        "Caller": "+14155550100",
        "Direction": "inbound",
        "From": "+14155550100",
        "To": "+14155550199",
    }
    fields.update(form or {})
    if form and "From" in form and "Caller" not in form:
        fields["Caller"] = form["From"]
    if form and "To" in form and "Called" not in form:
        fields["Called"] = form["To"]
    call_sid = fields["CallSid"]
    account_sid = fields["AccountSid"]

    request_url = http_base.rstrip("/") + webhook_path
    signed_url = (public_url.rstrip("/") + webhook_path) if public_url else request_url
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "User-Agent": "TwilioProxy/1.1",
        "Accept": "*/*",
    }
    if auth_token:
        headers["X-Twilio-Signature"] = RequestValidator(auth_token).compute_signature(
            signed_url, fields
        )
    body = urllib.parse.urlencode(fields).encode()
    status, twiml = await asyncio.to_thread(_post, request_url, body, headers, timeout)
    if status != 200:
        raise TwilioWebhookError(f"webhook {request_url} answered HTTP {status}: {twiml[:500]}")

    try:
        root = ET.fromstring(twiml)
    except ET.ParseError as exc:
        raise TwilioWebhookError(
            f"webhook answered invalid TwiML ({exc}): {twiml[:500]}"
        ) from exc
    connect_el = root.find("Connect")
    stream_el = connect_el.find("Stream") if connect_el is not None else None
    if connect_el is None or stream_el is None or not stream_el.get("url"):
        raise TwilioWebhookError(f"no <Connect><Stream url> in TwiML: {twiml[:500]}")
    params = {p.get("name", ""): p.get("value", "") for p in stream_el.findall("Parameter")}
    base_for_relative = wss_form(public_url or http_base)
    stream_url = urllib.parse.urljoin(base_for_relative + "/", stream_el.get("url", ""))
    parts = urllib.parse.urlsplit(stream_url)
    if parts.scheme != "wss":
        logger.warning("TwiML <Stream url=%r> is not wss:// (Twilio error 31922)", stream_url)
    if parts.query:
        logger.warning("TwiML <Stream url=%r> has a query string; Twilio drops it", stream_url)
    signature_url = urllib.parse.urlunsplit(("wss", parts.netloc, parts.path, "", ""))
    if stream_base is None:
        base = urllib.parse.urlsplit(http_base)
        scheme = "wss" if base.scheme == "https" else "ws"
        stream_base = f"{scheme}://{base.netloc}"
    loopback_url = stream_base.rstrip("/") + parts.path
    return WebhookAnswer(
        call_sid=call_sid,
        account_sid=account_sid,
        form=fields,
        twiml=twiml,
        stream_url=loopback_url,
        signature_url=signature_url,
        parameters=params,
        connect_action=connect_el.get("action"),
    )


def wss_form(url: str) -> str:
    """The ``wss://`` form of a websocket or HTTP URL, host and path unchanged."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(("wss", parts.netloc, parts.path, parts.query, ""))


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int, str]:
    """POST ``body`` and return ``(status, text)``; HTTP errors are returned, not raised."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode("utf-8", "replace")
