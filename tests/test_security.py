"""Who gets in: Twilio webhook signatures, the stream handshake signature, stream tokens.

Requests are signed for real with the ``twilio`` library's ``RequestValidator``.
"""

from __future__ import annotations

import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from django.core import signing
from django.test import Client, RequestFactory, override_settings
from twilio.request_validator import RequestValidator

from voiceconv import security
from voiceconv.exceptions import InsecureSetupWarning

TOKEN = "unit-test-auth-token-0123456789ab"
PUBLIC = "https://voice.example.com"
CALL_SID = "CA" + "1" * 32
OTHER_SID = "CA" + "2" * 32
INCOMING = "/twilio/incoming/"
STATUS = "/twilio/status/"
STREAM = "/twilio/stream/"

FORM: dict[str, str] = {
    "AccountSid": "AC" + "0" * 32,
    "ApiVersion": "2010-04-01",
    "CallSid": CALL_SID,
    "CallStatus": "ringing",
    "Direction": "inbound",
    "From": "+14155550123",
    "To": "+14155550100",
}


def sign(url: str, params: Mapping[str, str] | None = None, token: str = TOKEN) -> str:
    return str(RequestValidator(token).compute_signature(url, dict(params or {})))


@pytest.fixture
def secure() -> Iterator[None]:
    """Checks on, an auth token, a public origin."""
    with override_settings(TWILIO_AUTH_TOKEN=TOKEN, VOICECONV={"PUBLIC_URL": PUBLIC}):
        yield


def post(
    path: str,
    form: Mapping[str, str] = FORM,
    *,
    signature: str | None = None,
    **extra: str,
) -> Any:
    headers: dict[str, str] = dict(extra)
    if signature is not None:
        headers["HTTP_X_TWILIO_SIGNATURE"] = signature
    return Client().post(path, dict(form), **headers)  # type: ignore[arg-type]


def refused_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "voiceconv.views" and r.levelno == logging.WARNING and "refused" in r.message
    ]


# ------------------------------------------------------------------------- HTTP webhooks


@pytest.mark.django_db(transaction=True)  # the views write from a thread of their own
def test_signed_webhook_answers_a_stream_with_a_token_for_the_call(secure: None) -> None:
    response = post(INCOMING, signature=sign(PUBLIC + INCOMING, FORM))
    assert response.status_code == 200
    root = ET.fromstring(response.content)
    stream = root.find("Connect/Stream")
    assert stream is not None
    assert stream.get("url") == "wss://voice.example.com/twilio/stream/"
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert security.check_stream_token(params["call_token"] or "", CALL_SID) is None
    assert security.check_stream_token(params["call_token"] or "", OTHER_SID) is not None


@pytest.mark.django_db(transaction=True)  # the views write from a thread of their own
def test_parameters_twilio_adds_without_notice_are_signed_too(secure: None) -> None:
    form = {**FORM, "CallerCountry": "US", "StirVerstat": "TN-Validation-Passed-A"}
    assert post(INCOMING, form, signature=sign(PUBLIC + INCOMING, form)).status_code == 200


@pytest.mark.django_db(transaction=True)  # the views write from a thread of their own
def test_query_string_is_part_of_the_signed_url(secure: None) -> None:
    path = INCOMING + "?agent=support&x=%2B1"
    assert post(path, signature=sign(PUBLIC + path, FORM)).status_code == 200
    assert post(path, signature=sign(PUBLIC + INCOMING, FORM)).status_code == 403


@pytest.mark.parametrize(
    ("case", "signature"),
    [
        ("missing", None),
        ("empty", ""),
        ("garbage", "forged"),
        ("another account's token", sign(PUBLIC + INCOMING, FORM, token="someone-else")),
        ("http instead of https", sign("http://voice.example.com" + INCOMING, FORM)),
        ("no trailing slash", sign(PUBLIC + INCOMING.rstrip("/"), FORM)),
        ("another host", sign("https://evil.example.com" + INCOMING, FORM)),
        ("another path", sign(PUBLIC + STATUS, FORM)),
        ("other parameters", sign(PUBLIC + INCOMING, {**FORM, "From": "+19995550000"})),
        ("no parameters", sign(PUBLIC + INCOMING, {})),
    ],
)
@pytest.mark.django_db(transaction=True)  # the views write from a thread of their own
def test_unsigned_or_wrongly_signed_webhook_gets_403_and_a_log_line(
    secure: None, caplog: pytest.LogCaptureFixture, case: str, signature: str | None
) -> None:
    from voiceconv.models import Call

    with caplog.at_level(logging.WARNING, logger="voiceconv"):
        response = post(INCOMING, signature=signature)
    assert response.status_code == 403, case
    assert b"<Stream" not in response.content
    [line] = refused_lines(caplog)
    assert INCOMING in line and CALL_SID in line
    assert "X-Twilio-Signature" in line
    assert not Call.objects.filter(twilio_call_sid=CALL_SID).exists()


@pytest.mark.django_db(transaction=True)  # the views write from a thread of their own
def test_tampered_form_after_signing_is_refused(secure: None) -> None:
    signature = sign(PUBLIC + INCOMING, FORM)
    assert post(INCOMING, {**FORM, "To": "+19995550000"}, signature=signature).status_code == 403
    assert post(INCOMING, {**FORM, "Extra": "1"}, signature=signature).status_code == 403


@pytest.mark.django_db(transaction=True)  # the views write from a thread of their own
def test_status_callback_is_guarded_too(secure: None, caplog: pytest.LogCaptureFixture) -> None:
    from voiceconv.models import Call

    form = {**FORM, "CallStatus": "completed", "CallDuration": "42"}
    with caplog.at_level(logging.WARNING, logger="voiceconv"):
        assert post(STATUS, form).status_code == 403
        assert post(STATUS, form, signature=sign(PUBLIC + INCOMING, form)).status_code == 403
    assert len(refused_lines(caplog)) == 2
    assert not Call.objects.exists()
    assert post(STATUS, form, signature=sign(PUBLIC + STATUS, form)).status_code == 204
    assert Call.objects.get(twilio_call_sid=CALL_SID).duration_seconds == 42


# ------------------------------------------------------------- behind a TLS-terminating proxy


@pytest.mark.django_db(transaction=True)  # the views write from a thread of their own
def test_forwarded_proto_and_host_are_honoured_without_public_url() -> None:
    forwarded = {"HTTP_X_FORWARDED_PROTO": "https", "HTTP_X_FORWARDED_HOST": "voice.example.org"}
    with override_settings(TWILIO_AUTH_TOKEN=TOKEN, VOICECONV={"PUBLIC_URL": ""}):
        ok = post(INCOMING, signature=sign("https://voice.example.org" + INCOMING, FORM),
                  **forwarded)
        assert ok.status_code == 200
        stream = ET.fromstring(ok.content).find("Connect/Stream")
        assert stream is not None
        assert stream.get("url") == "wss://voice.example.org/twilio/stream/"
        # What Django sees itself (plain http on the inner host) is not what Twilio signed.
        inner = sign("http://testserver" + INCOMING, FORM)
        assert post(INCOMING, signature=inner, **forwarded).status_code == 403
        # Without a proxy the request's own URL is the one signed.
        assert post(INCOMING, signature=inner).status_code == 200
        # Proxies that append to the header: the first (client-facing) value counts.
        chained = {"HTTP_X_FORWARDED_PROTO": "https, http",
                   "HTTP_X_FORWARDED_HOST": "voice.example.org, inner:8000"}
        signature = sign("https://voice.example.org" + INCOMING, FORM)
        assert post(INCOMING, signature=signature, **chained).status_code == 200


@pytest.mark.django_db(transaction=True)  # the views write from a thread of their own
def test_public_url_wins_over_forwarded_headers(secure: None) -> None:
    forwarded = {"HTTP_X_FORWARDED_PROTO": "https", "HTTP_X_FORWARDED_HOST": "voice.example.org"}
    signature = sign(PUBLIC + INCOMING, FORM)
    response = post(INCOMING, signature=signature, **forwarded)
    assert response.status_code == 200
    assert b"wss://voice.example.com/twilio/stream/" in response.content
    spoofed = sign("https://voice.example.org" + INCOMING, FORM)
    assert post(INCOMING, signature=spoofed, **forwarded).status_code == 403


def test_public_origin_sources() -> None:
    rf = RequestFactory()
    plain = rf.post(INCOMING)
    proxied = rf.post(INCOMING, HTTP_X_FORWARDED_PROTO="https", HTTP_X_FORWARDED_HOST="a.example")
    with override_settings(VOICECONV={"PUBLIC_URL": "https://b.example/"}):
        assert security.public_origin(proxied) == "https://b.example"  # trailing slash dropped
        assert security.public_origin(None) == "https://b.example"
    with override_settings(VOICECONV={}):
        assert security.public_origin(plain) == "http://testserver"
        assert security.public_origin(proxied) == "https://a.example"
        assert security.public_origin(None) == ""


# ------------------------------------------------- switched off only explicitly; fail closed


@pytest.mark.django_db(transaction=True)  # the views write from a thread of their own
def test_checks_switched_off_explicitly_let_unsigned_requests_in() -> None:
    off = override_settings(
        TWILIO_AUTH_TOKEN="", VOICECONV={"PUBLIC_URL": PUBLIC, "VALIDATE_TWILIO_SIGNATURE": False}
    )
    with off, pytest.warns(InsecureSetupWarning, match="VALIDATE_TWILIO_SIGNATURE"):
        assert post(INCOMING).status_code == 200
        assert post(STATUS, {**FORM, "CallStatus": "completed"}).status_code == 204


@pytest.mark.django_db(transaction=True)  # the views write from a thread of their own
def test_checks_default_to_on() -> None:
    with override_settings(TWILIO_AUTH_TOKEN=TOKEN, VOICECONV={}):
        assert security.signature_checks_enabled()
        assert post(INCOMING).status_code == 403


@pytest.mark.parametrize("empty", ["", None])
@pytest.mark.django_db(transaction=True)  # the views write from a thread of their own
def test_no_auth_token_fails_closed(empty: str | None, caplog: pytest.LogCaptureFixture) -> None:
    # Even a request "signed" with the empty key is refused: no token, no entry.
    with override_settings(TWILIO_AUTH_TOKEN=empty, VOICECONV={"PUBLIC_URL": PUBLIC}):
        signature = sign(PUBLIC + INCOMING, FORM, token="")
        with caplog.at_level(logging.WARNING, logger="voiceconv"):
            assert post(INCOMING, signature=signature).status_code == 403
            assert post(STATUS, signature=sign(PUBLIC + STATUS, FORM, token="")).status_code == 403
        assert len(refused_lines(caplog)) == 2


def test_only_post_is_accepted(secure: None) -> None:
    path = INCOMING + "?CallSid=" + CALL_SID
    response = Client().get(path, HTTP_X_TWILIO_SIGNATURE=sign(PUBLIC + path))
    assert response.status_code == 405


# ------------------------------------------------------------- websocket handshake signature


def ws_scope(signature: str | None, path: str = STREAM, query: bytes = b"") -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"Twilio.TmeWs/1.0")]
    if signature is not None:
        headers.append((b"x-twilio-signature", signature.encode()))
    return {
        "type": "websocket",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "headers": headers,
    }


@pytest.mark.parametrize(
    ("signed_url", "ok"),
    [
        ("wss://voice.example.com/twilio/stream/", True),
        ("wss://voice.example.com:443/twilio/stream/", True),
        ("wss://voice.example.com:8443/twilio/stream/", False),
        ("https://voice.example.com/twilio/stream/", False),
        ("ws://voice.example.com/twilio/stream/", False),
        ("wss://voice.example.com/twilio/stream", False),
        ("wss://evil.example.com/twilio/stream/", False),
    ],
)
def test_handshake_signature_is_over_the_wss_url(signed_url: str, ok: bool) -> None:
    with override_settings(TWILIO_AUTH_TOKEN=TOKEN):
        scope = ws_scope(sign(signed_url))
        assert security.validate_websocket_signature(scope, PUBLIC) is ok
        # A configured origin with an explicit :443 matches either form too.
        assert security.validate_websocket_signature(scope, PUBLIC + ":443") is ok


def test_handshake_signature_edge_cases() -> None:
    good = sign("wss://voice.example.com/twilio/stream/")
    with override_settings(TWILIO_AUTH_TOKEN=TOKEN):
        assert not security.validate_websocket_signature(ws_scope(None), PUBLIC)
        assert not security.validate_websocket_signature(ws_scope(""), PUBLIC)
        assert not security.validate_websocket_signature(ws_scope("forged"), PUBLIC)
        assert not security.validate_websocket_signature(ws_scope(good, "/other/"), PUBLIC)
        # Signed for another account.
        other = sign("wss://voice.example.com/twilio/stream/", token="someone-else")
        assert not security.validate_websocket_signature(ws_scope(other), PUBLIC)
        # A query string is part of the signed URL.
        signed_q = sign("wss://voice.example.com/twilio/stream/?a=1")
        assert security.validate_websocket_signature(ws_scope(signed_q, query=b"a=1"), PUBLIC)
        assert not security.validate_websocket_signature(ws_scope(good, query=b"a=1"), PUBLIC)
        # An http:// public origin: Twilio still connects to (and signs) the wss:// URL.
        assert security.validate_websocket_signature(ws_scope(good), "http://voice.example.com")
    with override_settings(TWILIO_AUTH_TOKEN=""):
        assert not security.validate_websocket_signature(ws_scope(good), PUBLIC)
        empty_key = sign("wss://voice.example.com/twilio/stream/", token="")
        assert not security.validate_websocket_signature(ws_scope(empty_key), PUBLIC)


def test_websocket_origin() -> None:
    assert security.websocket_origin("https://a.example") == "wss://a.example"
    assert security.websocket_origin("http://a.example:8000") == "ws://a.example:8000"
    assert security.websocket_origin("wss://a.example") == "wss://a.example"


# ---------------------------------------------------------------------------- stream tokens


def old_token(call_sid: str, age: int) -> str:
    """A token minted ``age`` seconds ago (Django's signing timestamp, set back)."""

    class PastSigner(signing.TimestampSigner):
        def timestamp(self) -> str:
            return signing.b62_encode(int(time.time()) - age)

    return PastSigner(salt=security.TOKEN_SALT).sign_object({"c": call_sid}, compress=False)


def test_fresh_token_is_valid_for_its_call_only() -> None:
    token = security.make_stream_token(CALL_SID)
    assert security.check_stream_token(token, CALL_SID) is None
    assert security.check_stream_token(token, OTHER_SID) == "stream token for another call"
    assert len(token) < 400  # fits a <Parameter> (name + value under 500 characters)


def test_expired_token_is_refused() -> None:
    with override_settings(VOICECONV={"STREAM_TOKEN_MAX_AGE": 120}):
        assert security.check_stream_token(old_token(CALL_SID, 60), CALL_SID) is None
        assert security.check_stream_token(old_token(CALL_SID, 600), CALL_SID) == (
            "expired stream token"
        )
    with override_settings(VOICECONV={"STREAM_TOKEN_MAX_AGE": 30}):
        assert security.check_stream_token(old_token(CALL_SID, 60), CALL_SID) == (
            "expired stream token"
        )


@pytest.mark.parametrize(
    "forge",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # signature altered
        lambda t: t.replace(t.split(":")[0], signing.b64_encode(b'{"c":"CA22"}').decode()),
        lambda t: signing.dumps({"c": CALL_SID}, salt="another-salt"),
        lambda t: signing.dumps({"c": CALL_SID}, key="another-secret", salt=security.TOKEN_SALT),
        lambda t: "not-a-token",
        lambda t: t.split(":", 1)[0],
    ],
    ids=["altered", "payload swapped", "other salt", "other secret", "garbage", "unsigned"],
)
def test_forged_token_is_refused(forge: Any) -> None:
    forged = forge(security.make_stream_token(CALL_SID))
    assert security.check_stream_token(forged, CALL_SID) == "forged stream token"


def test_missing_token_and_odd_payloads() -> None:
    assert security.check_stream_token("", CALL_SID) == "missing stream token"
    for payload in ([CALL_SID], {"call": CALL_SID}, CALL_SID, None):
        token = signing.dumps(payload, salt=security.TOKEN_SALT)
        assert security.check_stream_token(token, CALL_SID) == "stream token for another call"


def test_token_reveals_no_secret() -> None:
    with override_settings(TWILIO_AUTH_TOKEN=TOKEN):
        from django.conf import settings

        token = security.make_stream_token(CALL_SID)
        assert TOKEN not in token and settings.SECRET_KEY not in token
