"""Twilio's webhooks skip the project's HTTP middleware (``voiceconv.asgi.WebhookFastPath``).

A real server process of the example project, with one more middleware that notes every
request it sees; requests signed for real.
"""

from __future__ import annotations

import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from twilio.request_validator import RequestValidator

from tests.conftest import AUTH_TOKEN, PUBLIC_URL, server_env
from voiceconv.asgi import is_fast_route
from voiceconv.testing.server import ServerProcess

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e, pytest.mark.timeout(120)]

FORM = {"CallSid": "CA" + "f" * 32, "AccountSid": "AC" + "0" * 32, "From": "+14155550123",
        "To": "+14155550100", "Direction": "inbound", "CallStatus": "ringing"}


def post(server: ServerProcess, path: str, form: dict[str, str], *, host: str = "") -> tuple[
        int, bytes]:
    body = "&".join(f"{k}={urllib.request.quote(v)}" for k, v in form.items()).encode()
    request = urllib.request.Request(server.http_url + path, data=body, method="POST")
    request.add_header("Content-Type", "application/x-www-form-urlencoded")
    request.add_header("X-Twilio-Signature",
                       RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC_URL + path, form))
    if host:
        request.add_header("Host", host)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def get(server: ServerProcess, path: str) -> int:
    try:
        with urllib.request.urlopen(server.http_url + path, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture
def noted(tmp_path: Path) -> Path:
    return tmp_path / "noted.txt"


@pytest.fixture
def server(noted: Path) -> ServerProcess:
    env = {**server_env(9), "DJANGO_SETTINGS_MODULE": "tests.fast_path_settings",
           "NOTED_REQUESTS": str(noted), "ALLOWED_HOSTS": "127.0.0.1,localhost"}
    with ServerProcess("project.asgi:application", server="uvicorn", env=env) as process:
        yield process


def test_webhooks_skip_the_middleware_and_the_rest_does_not(
    server: ServerProcess, noted: Path
) -> None:
    status, body = post(server, "/twilio/incoming/", FORM)
    assert status == 200
    assert ET.fromstring(body).find("Connect/Stream") is not None
    status, _ = post(server, "/twilio/status/", {**FORM, "CallStatus": "completed"})
    assert status == 204
    assert get(server, "/admin/login/") == 200
    lines = noted.read_text().splitlines() if noted.exists() else []
    assert lines == ["GET /admin/login/"]


def test_the_fast_path_still_refuses_what_it_must(server: ServerProcess, noted: Path) -> None:
    status, _ = post(server, "/twilio/incoming/", FORM, host="evil.example")
    assert status == 400  # ALLOWED_HOSTS, as CommonMiddleware would have refused it
    unsigned = urllib.request.Request(server.http_url + "/twilio/incoming/",
                                      data=b"CallSid=CA1", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(unsigned, timeout=30)
    refused.value.close()
    assert refused.value.code == 403
    # Not a webhook's method: through the full stack (and refused there).
    assert get(server, "/twilio/incoming/") == 405
    assert noted.read_text().splitlines() == ["GET /twilio/incoming/"]


def test_which_routes_are_fast() -> None:
    assert is_fast_route("/twilio/incoming/") and is_fast_route("/twilio/status/")
    assert is_fast_route("/twilio/sip/openai/")
    assert not is_fast_route("/twilio/metrics/")  # staff sessions: needs the middleware
    assert not is_fast_route("/admin/login/") and not is_fast_route("/nowhere/")
