"""Live calls across processes, end to end: two ASGI server processes sharing PostgreSQL and
Redis, no balancer. A call entered on process A is listed by ``voiceconv_live`` run as a
process of its own, watched live on process B's admin page in headless Chromium, and steered
from there (say, then hang up); a whisper comes from ``voiceconv_control``, another process
again. The call's record shows every request."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from websockets.exceptions import ConnectionClosed

from tests.conftest import ROOT, database_url, server_env
from tests.e2e import enter_call, wait_for_call
from voiceconv.testing import RealtimeStandIn, ScriptedResponse, silence, speech_like
from voiceconv.testing.server import ServerProcess

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = ROOT / "test-artifacts"
METRICS_TOKEN = "e2e-metrics-token"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("hang_up_leftovers"),
    pytest.mark.skipif(
        not (os.environ.get("DATABASE_URL", "").startswith("postgres")
             and os.environ.get("REDIS_URL")),
        reason="needs PostgreSQL (DATABASE_URL) and Redis (REDIS_URL) shared by two server "
               "processes; CI sets both",
    ),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no Chromium at /usr/bin/chromium"),
    pytest.mark.timeout(240),
]


@pytest.fixture(scope="module")
def two_servers(
    django_db_setup: None, django_db_blocker: Any, standin_port: int
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    with django_db_blocker.unblock():
        env = server_env(standin_port, HEARTBEAT_SECONDS=1, METRICS_TOKEN=METRICS_TOKEN)
    a = ServerProcess(env=env, cwd=ROOT)
    b = ServerProcess(env=env, cwd=ROOT)
    a.start()
    try:
        b.start()
        try:
            yield a, b
        finally:
            b.stop()
            if os.environ.get("SHOW_SERVER_LOG"):
                print(b.log_text())
    finally:
        a.stop()
        if os.environ.get("SHOW_SERVER_LOG"):
            print(a.log_text())


def manage(*args: str) -> subprocess.CompletedProcess[str]:
    """``manage.py`` in a process of its own, on the test database and Redis."""
    env = {**os.environ, "DATABASE_URL": database_url(), "DJANGO_SETTINGS_MODULE":
           "project.settings"}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


@contextlib.asynccontextmanager
async def caller_line(client: Any) -> AsyncIterator[None]:
    """Keep the caller's line going (silence in real time) so what is said gets played."""

    async def keep_talking() -> None:
        with contextlib.suppress(ConnectionClosed):
            while not client.closed.is_set():
                await client.send_silence(100)

    task = asyncio.ensure_future(keep_talking())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


async def expect_matching(session: Any, event: str, match: Any, timeout: float = 20) -> Any:
    """The next ``event`` the app sent the stand-in that ``match`` accepts."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = await session.expect_event(event, timeout=max(deadline - loop.time(), 0.1))
        if match(found):
            return found


def make_operator() -> None:
    from django.contrib.auth.models import Permission, User

    user = User.objects.create_user("operator", password="operator-pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(
        content_type__app_label="voiceconv", codename__in=["view_call", "control_call"]))


async def test_a_call_on_one_process_is_listed_watched_and_steered_from_another(
    two_servers: tuple[ServerProcess, ServerProcess], standin: RealtimeStandIn
) -> None:
    from playwright.async_api import async_playwright

    server_a, server_b = two_servers
    await sync_to_async(make_operator)()
    standin.responses.append(ScriptedResponse(text="Hello, this is the front desk."))
    standin.responses.append(ScriptedResponse(text="Of course, a table for two."))
    standin.responses.append(ScriptedResponse(text="Your table is booked for eight."))
    standin.caller_transcripts.append("A table for two tonight, please.")

    client = await enter_call(server_a, realtime=True)
    sid = client.call_sid
    session = await standin.wait_for_session(0, timeout=15)
    await session.expect_event("session.update", timeout=10)

    async with caller_line(client):
        # The call is live, held by process A: voiceconv_live (a third process) says so.
        call = await wait_for_call(sid, timeout=15)
        listed: list[dict[str, Any]] = []
        for _ in range(40):
            result = await asyncio.to_thread(manage, "voiceconv_live", "--json")
            assert result.returncode == 0, result.stderr
            listed = [json.loads(line) for line in result.stdout.splitlines()]
            if any(r["call_sid"] == sid for r in listed):
                break
            await asyncio.sleep(0.25)
        row = next(r for r in listed if r["call_sid"] == sid)
        assert row["process"].endswith(f":{server_a.process.pid}"), (row, server_a.process.pid)
        assert row["from"] == client.custom_parameters["from"]

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                page.set_default_timeout(20_000)
                page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
                await page.goto(server_b.http_url + "/admin/login/")
                await page.fill("#id_username", "operator")
                await page.fill("#id_password", "operator-pw")
                await page.click("input[type=submit]")
                await page.wait_for_url("**/admin/")

                # B's list of live calls shows the call held by A.
                await page.goto(server_b.http_url + "/admin/voiceconv/call/live/")
                await page.wait_for_selector(f'#vc-live-calls tr[data-call-sid="{sid}"]')

                # B's call page shows the conversation as it happens on A.
                await page.goto(server_b.http_url + f"/admin/voiceconv/call/{call.pk}/change/")
                await page.wait_for_selector("#vc-live.vc-connected")
                turns = page.locator("#vc-live-turns")
                await turns.get_by_text("Hello, this is the front desk.").wait_for()
                await client.send_audio(speech_like(800) + silence(700))
                await turns.get_by_text("A table for two tonight, please.").wait_for()
                await turns.get_by_text("Of course, a table for two.").wait_for()

                # Say, from B's page: the agent on A says it, and the page shows it.
                await page.fill("#vc-say-text", "Your table is booked for eight.")
                await page.click('button[data-action="say"]')
                said = await expect_matching(session, "response.create", lambda e: (
                    "Your table is booked for eight." in e["response"].get("instructions", "")))
                assert said["response"]["conversation"] == "none"
                await turns.get_by_text("Your table is booked for eight.").first.wait_for()
                await turns.locator("li.vc-control").get_by_text("say by operator").wait_for()

                # Whisper, from the command line (yet another process).
                whisper = await asyncio.to_thread(
                    manage, "voiceconv_control", sid, "whisper", "Offer a window seat.",
                    "--by", "supervisor")
                assert whisper.returncode == 0, whisper.stderr
                assert f":{server_a.process.pid}" in whisper.stdout
                update = await expect_matching(session, "session.update", lambda e: (
                    "Offer a window seat." in e["session"].get("instructions", "")))
                assert update["session"]["instructions"].endswith("Offer a window seat.")

                # Hang up, from B's page: the call on A ends, and the page says so.
                await page.click('button[data-action="hang_up"]')
                await client.wait_closed(timeout=30)
                await page.wait_for_selector("#vc-live.vc-ended")
                ARTIFACTS.mkdir(exist_ok=True)
                await page.screenshot(path=str(ARTIFACTS / "live-monitor.png"), full_page=True)
            finally:
                await browser.close()

    call = await wait_for_call(sid, ended=True, timeout=15)
    assert call.end_reason == "operator"
    entries = await sync_to_async(list)(call.transcript_entries.order_by("sequence"))
    controls = [e.text for e in entries if e.role == "control"]
    assert any(t.startswith("say by operator: 'Your table is booked for eight.'")
               for t in controls), controls
    assert any(t.startswith("whisper by supervisor:") for t in controls), controls
    assert any(t.startswith("hang_up by operator: operator") for t in controls), controls
    assert session.protocol_violations == []

    result = await asyncio.to_thread(manage, "voiceconv_live", "--json")
    assert sid not in result.stdout

    # Process A counted the call's frames and its end (read off the call, not per frame).
    from prometheus_client.parser import text_string_to_metric_families

    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        import urllib.request

        request = urllib.request.Request(server_a.http_url + "/twilio/metrics/",
                                         headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    values = await asyncio.to_thread(scrape)
    assert values[("voiceconv_frames_total", (("direction", "in"),))] > 0
    assert values[("voiceconv_frames_total", (("direction", "out"),))] > 0
    assert values[("voiceconv_calls_ended_total", (("reason", "operator"),))] >= 1
    assert values[("voiceconv_control_requests_total", (("action", "say"), ("outcome", "ok")))] >= 1


async def test_twilios_completed_status_on_another_process_ends_the_live_call(
    two_servers: tuple[ServerProcess, ServerProcess], standin: RealtimeStandIn
) -> None:
    import urllib.parse
    import urllib.request

    from twilio.request_validator import RequestValidator

    from tests.conftest import AUTH_TOKEN, PUBLIC_URL

    server_a, server_b = two_servers
    client = await enter_call(server_a, realtime=True)
    session = await standin.wait_for_session(0, timeout=15)
    await session.expect_event("session.update", timeout=10)
    async with caller_line(client):
        await wait_for_call(client.call_sid, timeout=15)
        await asyncio.sleep(0.5)  # the stream has joined its group
        # Twilio says the call is over, to process B, and its stop never reaches A.
        form = {"CallSid": client.call_sid, "CallStatus": "completed", "CallDuration": "7"}
        signature = RequestValidator(AUTH_TOKEN).compute_signature(
            PUBLIC_URL + "/twilio/status/", form)
        request = urllib.request.Request(
            server_b.http_url + "/twilio/status/", data=urllib.parse.urlencode(form).encode(),
            headers={"X-Twilio-Signature": signature}, method="POST")
        with await asyncio.to_thread(urllib.request.urlopen, request, timeout=10) as response:
            assert response.status == 204
        await client.wait_closed(timeout=15)
    for _ in range(100):  # the status view set ended_at; the call's own record follows
        call = await wait_for_call(client.call_sid, ended=True)
        if call.end_reason:
            break
        await asyncio.sleep(0.1)
    assert call.status == "completed"
    assert call.end_reason == "caller_hung_up"
    await asyncio.wait_for(session.closed.wait(), 5)


def make_watchers() -> str:
    """A staff watcher without the control permission, and a clerk who is not staff (but has
    both permissions); returns a session key logged in as the clerk."""
    from django.contrib.auth.models import Permission, User
    from django.test import Client

    perms = Permission.objects.filter(content_type__app_label="voiceconv",
                                      codename__in=["view_call", "control_call"])
    watcher = User.objects.create_user("watcher", password="watcher-pw", is_staff=True)
    watcher.user_permissions.add(*perms.filter(codename="view_call"))
    clerk = User.objects.create_user("clerk", password="clerk-pw", is_staff=False)
    clerk.user_permissions.add(*perms)
    client = Client()
    client.force_login(clerk)
    return client.cookies["sessionid"].value


#: In the page: open the call's monitor socket, ask it to hang up once it answers, and resolve
#: with whether it opened, what it said and how it closed.
TRY_SOCKET = """async ([url, action]) => await new Promise((resolve) => {
  const ws = new WebSocket(url);
  const got = [];
  let opened = false;
  ws.onopen = () => { opened = true; };
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data);
    got.push(m);
    if (m.event === "snapshot") ws.send(JSON.stringify({id: 1, action: action, args: {}}));
    if (m.event === "control_result") { ws.close(); resolve({opened, got}); }
  };
  ws.onclose = (e) => resolve({opened, got, code: e.code});
})"""


async def test_a_watcher_without_the_permission_sees_no_buttons_and_strangers_get_nothing(
    two_servers: tuple[ServerProcess, ServerProcess], standin: RealtimeStandIn
) -> None:
    from playwright.async_api import async_playwright

    server_a, server_b = two_servers
    clerk_session = await sync_to_async(make_watchers)()
    standin.responses.append(ScriptedResponse(text="Hello, this is the front desk."))
    client = await enter_call(server_a, realtime=True)
    sid = client.call_sid
    session = await standin.wait_for_session(0, timeout=15)
    await session.expect_event("session.update", timeout=10)
    socket_url = server_b.ws_url + f"/voiceconv/live/{sid}/"

    async with caller_line(client):
        call = await wait_for_call(sid, timeout=15)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                # A staff watcher with only the view permission: the turns, no buttons.
                page = await browser.new_page()
                page.set_default_timeout(20_000)
                await page.goto(server_b.http_url + "/admin/login/")
                await page.fill("#id_username", "watcher")
                await page.fill("#id_password", "watcher-pw")
                await page.click("input[type=submit]")
                await page.wait_for_url("**/admin/")
                await page.goto(server_b.http_url + f"/admin/voiceconv/call/{call.pk}/change/")
                await page.wait_for_selector("#vc-live.vc-connected")
                await page.locator("#vc-live-turns").get_by_text(
                    "Hello, this is the front desk.").wait_for()
                assert await page.locator("button[data-action]").count() == 0
                assert await page.locator("#vc-controls").count() == 0
                # Nor can the watcher steer the call through the socket itself.
                tried = await page.evaluate(TRY_SOCKET, [socket_url, "hang_up"])
                assert tried["opened"], tried
                answer = tried["got"][-1]
                assert answer["event"] == "control_result" and answer["ok"] is False, tried
                assert "permission" in answer["detail"]

                # A stranger (no session) and a clerk who is not staff: the socket refuses
                # them at the handshake, with nothing of the call sent.
                for cookies in ([], [{"name": "sessionid", "value": clerk_session,
                                      "url": server_b.http_url}]):
                    context = await browser.new_context()
                    if cookies:
                        await context.add_cookies(cookies)  # type: ignore[arg-type]
                    other = await context.new_page()
                    await other.goto(server_b.http_url + "/admin/login/")
                    tried = await other.evaluate(TRY_SOCKET, [socket_url, "hang_up"])
                    assert not tried["opened"] and tried["got"] == [], tried
                    await context.close()
            finally:
                await browser.close()
        assert not client.closed.is_set()  # nobody hung up the call
    await client.hang_up()

    call = await wait_for_call(sid, ended=True, timeout=15)
    assert call.end_reason == "caller_hung_up"
    roles = await sync_to_async(list)(call.transcript_entries.values_list("role", flat=True))
    assert "control" not in roles
