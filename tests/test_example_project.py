"""The example project as the README serves it: its home page (in headless Chromium), the
admin's branding, and static files under daphne and uvicorn."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import ROOT, database_url
from tests.test_admin_browser import CHROMIUM, CHROMIUM_ARGS
from voiceconv.testing import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PUBLIC = "https://voice.example.org"


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def env(**extra: str) -> dict[str, str]:
    return {"DATABASE_URL": database_url(), "DEBUG": "0", "ALLOWED_HOSTS": "127.0.0.1",
            "SECRET_KEY": "test-" + "x" * 40, **extra}


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    """No OpenAI key, a Twilio token, a public URL: what the home page should report."""
    with ServerProcess(server="uvicorn", cwd=ROOT, env=env(
        OPENAI_API_KEY="", TWILIO_AUTH_TOKEN="tok", TWILIO_ACCOUNT_SID="", PUBLIC_URL=PUBLIC,
    )) as s:
        yield s


@pytest.mark.parametrize("asgi_server", ["daphne", "uvicorn"])
def test_the_admin_is_styled_under_daphne_and_uvicorn(asgi_server: Any) -> None:
    with ServerProcess(server=asgi_server, cwd=ROOT, env=env()) as s:
        status, body = get(s.http_url + "/static/admin/css/base.css")
        assert status == 200 and b"body" in body
        status, body = get(s.http_url + "/admin/login/")
        assert status == 200 and b"voiceconv \xc2\xb7 phone agents" in body


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="no Chromium at /usr/bin/chromium")
def test_the_home_page_in_chromium(server: ServerProcess) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(15_000)
            response = page.goto(server.http_url + "/")
            assert response is not None and response.status == 200
            assert "phone lines" in page.inner_text("body")
            # The exact URLs to paste into the Twilio console, on PUBLIC_URL.
            assert page.inner_text("#incoming-url") == f"{PUBLIC}/twilio/incoming/"
            assert page.inner_text("#status-url") == f"{PUBLIC}/twilio/status/"
            assert page.locator("#public-url-note").count() == 0
            # Which credentials are missing.
            state = {
                name: page.inner_text(f'#credentials tr[data-name="{name}"] td >> nth=0')
                for name in ("OPENAI_API_KEY", "TWILIO_AUTH_TOKEN", "TWILIO_ACCOUNT_SID")
            }
            assert state == {"OPENAI_API_KEY": "missing", "TWILIO_AUTH_TOKEN": "configured",
                             "TWILIO_ACCOUNT_SID": "missing"}
            # The admin links lead to the admin (its login, signed out).
            links = page.locator("#admin-links a")
            assert [links.nth(i).inner_text() for i in range(links.count())] == [
                "Agents", "Calls", "Tool definitions"
            ]
            links.nth(1).click()
            page.wait_for_url("**/admin/login/**")
            assert "voiceconv · phone agents" in page.inner_text("#site-name")
            assert page.locator("link[href$='base.css']").count() == 1
        finally:
            browser.close()


def test_without_public_url_the_page_says_the_urls_are_guessed() -> None:
    with ServerProcess(cwd=ROOT, env=env(PUBLIC_URL="", OPENAI_API_KEY="sk-x")) as s:
        status, body = get(s.http_url + "/")
    assert status == 200
    assert f"{s.http_url}/twilio/incoming/".encode() in body
    assert b'id="public-url-note"' in body
