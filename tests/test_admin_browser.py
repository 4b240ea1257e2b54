"""The call review pages in real headless Chromium (Playwright driving /usr/bin/chromium)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from voiceconv.models import Agent, Call, ToolInvocation, TranscriptEntry

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no Chromium at /usr/bin/chromium"),
]


@pytest.fixture
def browser_page() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(
                viewport={"width": 1280, "height": 900}, accept_downloads=True
            )
            page = context.new_page()
            page.set_default_timeout(15_000)
            yield page
            context.close()
        finally:
            browser.close()


@pytest.fixture
def reviewed_call() -> Call:
    agent = Agent.objects.create(name="Order support", slug="order-support")
    started = timezone.now() - dt.timedelta(minutes=5)
    call = Call.objects.create(
        twilio_call_sid="CA" + "5" * 32, twilio_stream_sid="MZ" + "6" * 32,
        from_number="+14155550123", to_number="+14155550199", direction="inbound",
        agent=agent, model="gpt-realtime-2.1", status="completed", end_reason="caller_hung_up",
        webhook_received_at=started - dt.timedelta(seconds=1), stream_started_at=started,
        first_audio_at=started + dt.timedelta(seconds=1, milliseconds=400),
        ended_at=started + dt.timedelta(seconds=48), duration_seconds=48,
        responses=4, input_tokens=5210, output_tokens=1830, input_audio_tokens=4800,
        input_text_tokens=410, input_cached_tokens=1200, output_audio_tokens=1650,
        output_text_tokens=180, estimated_cost=Decimal("0.254316"),
    )
    turns = [
        dict(role="assistant", text="Hi, this is Acme support. How can I help?", offset_ms=900,
             latency_ms=None),
        dict(role="caller", text="Hi, where is my order 42?", offset_ms=4200),
        dict(role="assistant", text="Let me look that up for you.", offset_ms=6100,
             latency_ms=620),
        dict(role="tool", text='lookup_order {"order_id": "42"} → {"status": "shipped"}',
             offset_ms=6300),
        dict(role="assistant",
             text="Your order shipped yesterday and should arrive on Friday morning, "
                  "and you can track it with the link we sent by e-mail.",
             offset_ms=7900, latency_ms=780, interrupted=True, heard_ms=2300, total_ms=7600,
             heard_text="Your order shipped yesterday and should arrive on Friday"),
        dict(role="caller", text="Friday is fine, thanks!", offset_ms=10400),
        dict(role="dtmf", text="5", offset_ms=12000),
        dict(role="assistant", text="You're welcome. Goodbye!", offset_ms=12800,
             latency_ms=540),
    ]
    for i, fields in enumerate(turns, start=1):
        TranscriptEntry.objects.create(call=call, sequence=i, **fields)
    ToolInvocation.objects.create(
        call=call, tool_name="lookup_order", openai_call_id="call_9f2", started_at=started,
        arguments='{"order_id": "42"}', output='{"status": "shipped"}', duration_ms=41,
    )
    return call


@pytest.fixture
def reviewer() -> User:
    return User.objects.create_superuser("reviewer", "r@example.com", "s3cret-pass")


# Database fixtures come before the browser: Playwright's sync API runs an event loop in this
# thread, and Django refuses synchronous ORM calls while one is running.
def test_review_a_call_in_chromium(live_server: Any, reviewed_call: Call, reviewer: User,
                                   browser_page: Any) -> None:
    page = browser_page

    # Log in.
    page.goto(f"{live_server.url}/admin/login/?next=/admin/voiceconv/call/")
    page.fill("#id_username", "reviewer")
    page.fill("#id_password", "s3cret-pass")
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/voiceconv/call/")
    assert page.locator("#result_list").is_visible()
    assert "+14155550123 → +14155550199" in page.locator("#result_list").inner_text()

    # Open the call: the conversation with the interrupted turn's unheard tail struck through.
    page.click("text=+14155550123 → +14155550199")
    page.wait_for_url(f"**/admin/voiceconv/call/{reviewed_call.pk}/change/")
    tail = page.locator("li.vc-interrupted del.vc-unheard")
    assert tail.is_visible()
    assert tail.inner_text().strip() == (
        "morning, and you can track it with the link we sent by e-mail."
    )
    decoration = tail.evaluate("el => getComputedStyle(el).textDecorationLine")
    assert "line-through" in decoration
    heard = page.locator("li.vc-interrupted .vc-heard")
    assert heard.inner_text() == "Your order shipped yesterday and should arrive on Friday"
    assert "line-through" not in heard.evaluate("el => getComputedStyle(el).textDecorationLine")
    assert "heard 2.3 s of 7.6 s" in page.locator("li.vc-interrupted .vc-cut").inner_text()
    assert page.locator("li.vc-turn").count() == 8
    # Caller bubbles sit left, assistant bubbles right.
    caller_box = page.locator("li.vc-caller .vc-bubble").first.bounding_box()
    assistant_box = page.locator("li.vc-assistant .vc-bubble").first.bounding_box()
    assert caller_box["x"] < assistant_box["x"]
    assert "call_9f2" in page.content()

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "admin-call.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    # Export it from the list.
    page.goto(f"{live_server.url}/admin/voiceconv/call/")
    page.check(f"input[name=_selected_action][value='{reviewed_call.pk}']")
    page.select_option("select[name=action]", "export_jsonl")
    with page.expect_download() as download_info:
        page.click("button[name=index]")
    download = download_info.value
    assert download.suggested_filename.endswith(".jsonl")
    lines = Path(download.path()).read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == 8
    interrupted = [r for r in rows if r["interrupted"]]
    assert len(interrupted) == 1 and interrupted[0]["heard_ms"] == 2300
    assert {r["call_sid"] for r in rows} == {reviewed_call.twilio_call_sid}
