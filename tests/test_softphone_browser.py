"""The browser softphone in real headless Chromium, against the Realtime stand-in.

Chromium's fake microphone plays a WAV file (speech, then a pause, looped); the page sends it
as Media Streams frames to the softphone route of a real server process; the stand-in
answers with scripted audio that the page plays with Twilio's playout rules. The next line
of speech barges in on the long answer: the server clears the page's playback. Beside the
call, the live monitor's feed of it (the caller may watch it without ``view_call``).
"""

from __future__ import annotations

import asyncio
import json
import time
import wave
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from tests import softphone as kit
from tests.conftest import ROOT
from voiceconv.models import Agent, Call, TranscriptEntry
from voiceconv.testing import RealtimeStandIn, ScriptedResponse, ServerProcess, rms
from voiceconv.testing.audio import espeak_ulaw, silence, speech_like, ulaw_decode

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--no-first-run", "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]
LONG_ANSWER = "Our opening hours are nine to five on weekdays, and ten to two on Saturdays."
SHORT_ANSWER = "Sure, anything else?"
KEY_ANSWER = "You pressed five."

softphone_server = kit.softphone_server

pytestmark = [
    pytest.mark.browser,
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no Chromium at /usr/bin/chromium"),
]


def speech(text: str, ms: int, seed: int) -> bytes:
    """Real speech from espeak-ng where installed, else speech-like audio; ``ms`` long."""
    audio = espeak_ulaw(text) or speech_like(ms, seed=seed)
    audio = audio[: ms * 8]
    return audio + silence(ms - len(audio) // 8)


@pytest.fixture(scope="module")
def caller_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the fake microphone says, over and over: 1.5 s of speech every 8 s.

    Chromium loops the file from when it opens the device, so the page's first frames can
    fall anywhere in it; every answer longer than the loop is barged in on by the next line.
    """
    ulaw = speech("What are your opening hours?", 1500, seed=1) + silence(6500)
    path = tmp_path_factory.mktemp("softphone") / "caller.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(ulaw_decode(ulaw))
    return path


async def wait_until(page: Any, expression: str, timeout: float = 30.0) -> Any:
    """Poll a JS expression in the page until it is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            stats = await page.evaluate("JSON.stringify(window.voiceconvSoftphones?.[0]?.stats)")
            raise AssertionError(f"{expression} not true within {timeout} s; stats {stats}")
        await asyncio.sleep(0.1)


async def test_call_an_agent_from_its_admin_page(
    softphone_server: ServerProcess, standin: RealtimeStandIn, caller_wav: Path
) -> None:
    from playwright.async_api import async_playwright

    agent = await Agent.objects.acreate(name="Help desk", slug="help-desk")
    # May call agents, not read calls: the live transcript is the feed of the call placed.
    operator = await sync_to_async(kit.make_staff)(view_calls=False)
    standin.caller_transcripts.extend(["What are your opening hours?", "Wait, one more thing."])
    standin.default_caller_transcript = "Hello?"
    standin.responses.extend([
        ScriptedResponse(text=LONG_ANSWER, audio_ms=12000),
        ScriptedResponse(text=SHORT_ANSWER, audio_ms=1500),
        ScriptedResponse(text=KEY_ANSWER, audio_ms=1000),
    ])
    base = softphone_server.http_url
    args = [*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={caller_wav}"]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 1000})
            page = await context.new_page()
            page.set_default_timeout(20_000)
            await page.goto(f"{base}/admin/login/?next=/admin/voiceconv/agent/{agent.pk}/change/")
            await page.fill("#id_username", "operator")
            await page.fill("#id_password", "s3cret-pass")
            await page.click("input[type=submit]")
            await page.wait_for_url(f"**/admin/voiceconv/agent/{agent.pk}/change/")
            panel = page.locator("[data-voiceconv-softphone]")
            assert "Call this agent" in await panel.inner_text()

            # Chromium's echo canceller silences its fake microphone while the page plays
            # audio, so the barge-in could not be heard: this caller wears headphones.
            await page.uncheck("[data-vc=processing]")
            await page.click("[data-vc=call]")
            phone = "window.voiceconvSoftphones[0]"
            await wait_until(page, f"{phone}.state === 'in-call' && {phone}.callSid")
            call_sid = await page.evaluate(f"{phone}.callSid")
            assert call_sid.startswith("BR")

            # The caller's speech reaches the stand-in, which answers; the page plays it.
            session = await standin.wait_for_session(timeout=20)
            await wait_until(page, f"{phone}.stats.audibleSamplesPlayed > 8000", timeout=30)
            # The second stretch of speech barges in: the server clears the page's playback.
            await wait_until(page, f"{phone}.stats.clears >= 1", timeout=30)
            stats = await page.evaluate(f"{phone}.stats")
            assert stats["clearsReceived"] >= 1
            assert stats["droppedSamples"] > 0, stats  # queued audio was thrown away at once
            # ... then the short answer is played, and its mark echoed.
            await wait_until(
                page, f"{phone}.transcript.some(t => t.role === 'assistant' && "
                f"t.text === {json.dumps(SHORT_ANSWER)})", timeout=30)
            await wait_until(page, f"{phone}.stats.queuedSamples === 0 && "
                             f"{phone}.stats.marksEchoed >= {phone}.stats.marksReceived")
            # A key press from the keypad reaches the model, which answers it.
            await page.click("[data-vc-digit='5']")
            await wait_until(
                page, f"{phone}.transcript.some(t => t.role === 'assistant' && "
                f"t.text === {json.dumps(KEY_ANSWER)})", timeout=30)
            # The panel shows the monitor's feed: the key press, the barge-in (what was heard),
            # each turn once, in order.
            transcript = page.locator("[data-vc=transcript]")
            transcript_text = await transcript.inner_text()
            assert "What are your opening hours?" in transcript_text
            await wait_until(page, f"{phone}.transcript.some(t => t.role === 'dtmf' && "
                             "t.text === '5')")
            assert await transcript.locator("li.vc-dtmf .vc-role").inner_text() == "key press"
            cut = transcript.locator("li.vc-assistant.vc-interrupted").first
            assert "interrupted" in await cut.locator(".vc-chip").inner_text()
            assert LONG_ANSWER.startswith(await cut.locator(".vc-heard").inner_text())
            sequences = await page.evaluate(f"{phone}.transcript.map(t => t.sequence)")
            assert sequences == sorted(set(sequences))
            assert await page.evaluate(f"{phone}.feedState") == "live"
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "softphone.png"), full_page=True)
            await page.click("[data-vc=hangup]")
            await wait_until(page, f"{phone}.state === 'ended'")
            await wait_until(page, f"{phone}.feedState === 'ended'")  # the feed's call end
            stats = await page.evaluate(f"{phone}.stats")

            voiced = [
                w for w in range(0, len(session.input_audio) - 160, 160)
                if rms(bytes(session.input_audio[w : w + 160])) > 0.03
            ]
            assert len(voiced) > 50, "the caller's speech did not reach the stand-in"
            assert session.sent_types().count("input_audio_buffer.speech_started") >= 2
            assert session.truncates, "the barge-in did not truncate the answer"
            assert stats["framesSent"] > 100 and stats["marksEchoed"] >= 2
            assert session.protocol_violations == []

            # The call is recorded like any other, and reviewable in the admin.
            call = await _wait_for_ended_call(call_sid)
            assert call.direction == Call.Direction.BROWSER
            assert call.agent_id == agent.pk and call.from_number == "browser:operator"
            entries = [e async for e in TranscriptEntry.objects.filter(call=call)]
            roles = [e.role for e in entries]
            assert "caller" in roles and "dtmf" in roles
            long_turn = next(e for e in entries if LONG_ANSWER.startswith(e.text.strip()))
            assert long_turn.interrupted and 0 < (long_turn.heard_ms or 0) < 12000
            assert await page.evaluate(f"{phone}.reviewUrl") == ""  # it may not read calls
            await sync_to_async(kit.grant)(operator, "view_call")
            await page.goto(f"{base}/admin/voiceconv/call/{call.pk}/change/")
            body = await page.locator("#content").inner_text()
            assert SHORT_ANSWER in body and "What are your opening hours?" in body
        finally:
            await browser.close()


async def _wait_for_ended_call(call_sid: str, timeout: float = 15.0) -> Call:
    deadline = time.monotonic() + timeout
    while True:
        call = await Call.objects.filter(twilio_call_sid=call_sid).afirst()
        if call is not None and call.ended_at is not None:
            return call
        if time.monotonic() > deadline:
            raise AssertionError(f"browser call {call_sid} not finalised: {call}")
        await asyncio.sleep(0.1)
