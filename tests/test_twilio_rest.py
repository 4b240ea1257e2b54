"""Hang-up and transfer through the twilio client, against a real HTTP server on loopback."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from twilio.base.exceptions import TwilioRestException

from voiceconv.testing.twilio_api import FakeTwilioAPI, TwilioRequest
from voiceconv.twilio_rest import (
    RebasingHttpClient,
    get_twilio_client,
    hangup_call,
    transfer_call,
)
from voiceconv.twiml import dial

ACCOUNT = "AC" + "a" * 32
TOKEN = "secret-token"
CALL = "CA" + "b" * 32
CALL_PATH = f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{CALL}.json"


def call_resource(status: str) -> dict[str, Any]:
    return {"sid": CALL, "account_sid": ACCOUNT, "status": status,
            "uri": f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{CALL}.json"}


@pytest.fixture
def fake_twilio(settings: Any) -> Iterator[FakeTwilioAPI]:
    with FakeTwilioAPI(body=call_resource("completed")) as fake:
        settings.TWILIO_ACCOUNT_SID = ACCOUNT
        settings.TWILIO_AUTH_TOKEN = TOKEN
        settings.VOICECONV = {"TWILIO_API_BASE": fake.url}
        yield fake


def assert_twilio_request(seen: TwilioRequest) -> None:
    assert seen.method == "POST"
    assert seen.path == CALL_PATH
    expected = base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
    assert seen.headers["Authorization"] == f"Basic {expected}"
    assert seen.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert seen.headers["User-Agent"].startswith("twilio-python/")


def test_hangup_posts_status_completed(fake_twilio: FakeTwilioAPI) -> None:
    assert hangup_call(CALL) is True
    [seen] = fake_twilio.requests
    assert_twilio_request(seen)
    assert seen.form == {"Status": ["completed"]}


@pytest.mark.parametrize(
    ("status", "code"), [(404, 20404), (400, 21220)], ids=["not-found", "not-in-progress"]
)
def test_hangup_of_an_ended_call_is_success(
    fake_twilio: FakeTwilioAPI, status: int, code: int, caplog: Any
) -> None:
    fake_twilio.status = status
    fake_twilio.body = {"code": code, "message": "gone", "more_info": "", "status": status}
    with caplog.at_level(logging.INFO, logger="voiceconv.twilio"):
        assert hangup_call(CALL) is True
    assert len(fake_twilio.requests) == 1
    assert f"Call {CALL} had already ended" in caplog.text


def test_hangup_failure_is_logged_and_false(fake_twilio: FakeTwilioAPI, caplog: Any) -> None:
    fake_twilio.status = 401
    fake_twilio.body = {"code": 20003, "message": "Authenticate", "status": 401}
    with caplog.at_level(logging.ERROR, logger="voiceconv.twilio"):
        assert hangup_call(CALL) is False
    assert f"Hanging up call {CALL} failed: Twilio 401 20003" in caplog.text


def test_hangup_unreachable_api_is_false(fake_twilio: FakeTwilioAPI, settings: Any,
                                         caplog: Any) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.VOICECONV = {"TWILIO_API_BASE": f"http://127.0.0.1:{port}"}
    with caplog.at_level(logging.ERROR, logger="voiceconv.twilio"):
        assert hangup_call(CALL) is False
    assert "ConnectionError" in caplog.text


def test_transfer_to_number_posts_dial_twiml(fake_twilio: FakeTwilioAPI) -> None:
    fake_twilio.body = call_resource("in-progress")
    transfer_call(CALL, "+1 (415) 555-0100")
    [seen] = fake_twilio.requests
    assert_twilio_request(seen)
    assert seen.form == {"Twiml": ["<Response><Dial>+14155550100</Dial></Response>"]}


def test_transfer_to_sip_posts_sip_twiml(fake_twilio: FakeTwilioAPI) -> None:
    transfer_call(CALL, "sip:desk@pbx.example.com")
    [seen] = fake_twilio.requests
    assert seen.form == {
        "Twiml": ["<Response><Dial><Sip>sip:desk@pbx.example.com</Sip></Dial></Response>"]
    }


def test_transfer_bad_target_sends_nothing(fake_twilio: FakeTwilioAPI) -> None:
    with pytest.raises(ValueError, match="international format"):
        transfer_call(CALL, "the manager")
    assert fake_twilio.requests == []


def test_transfer_refused_raises(fake_twilio: FakeTwilioAPI) -> None:
    fake_twilio.status = 400
    fake_twilio.body = {"code": 21220, "message": "Call is not in-progress", "status": 400}
    with pytest.raises(TwilioRestException) as info:
        transfer_call(CALL, "+14155550100")
    assert info.value.code == 21220


def test_twiml_escapes_markup() -> None:
    assert dial("sip:a&b@example.com") == (
        "<Response><Dial><Sip>sip:a&amp;b@example.com</Sip></Dial></Response>"
    )


def test_client_requires_credentials(settings: Any) -> None:
    settings.TWILIO_ACCOUNT_SID = ""
    settings.TWILIO_AUTH_TOKEN = TOKEN
    with pytest.raises(ImproperlyConfigured, match="TWILIO_ACCOUNT_SID"):
        get_twilio_client()
    settings.TWILIO_ACCOUNT_SID = ACCOUNT
    del settings.TWILIO_AUTH_TOKEN
    with pytest.raises(ImproperlyConfigured, match="TWILIO_AUTH_TOKEN"):
        get_twilio_client()
    assert hangup_call(CALL) is False  # logged, not raised


def test_client_without_override_talks_to_twilio(settings: Any) -> None:
    settings.TWILIO_ACCOUNT_SID = ACCOUNT
    settings.TWILIO_AUTH_TOKEN = TOKEN
    settings.VOICECONV = {"TWILIO_API_BASE": ""}
    client = get_twilio_client()
    assert not isinstance(client.http_client, RebasingHttpClient)
    assert client.http_client.timeout == 10.0
    client.http_client.session.close()  # type: ignore[attr-defined]


def test_rebasing_keeps_path_and_query() -> None:
    client = RebasingHttpClient("http://127.0.0.1:9/proxy/")
    try:
        assert client.rebase("https://api.twilio.com/2010-04-01/Accounts/X/Calls.json?a=1") == (
            "http://127.0.0.1:9/proxy/2010-04-01/Accounts/X/Calls.json?a=1"
        )
    finally:
        client.session.close()  # type: ignore[union-attr]
    with pytest.raises(ImproperlyConfigured, match="TWILIO_API_BASE"):
        RebasingHttpClient("127.0.0.1:9")
