"""The admin and GPT-Live: each backend's agent options, validated; a call's cost from seconds."""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from tests.conftest import write_pcm_wav
from voiceconv.gpt_live import opening_clip_for
from voiceconv.models import Agent, Call, TranscriptEntry
from voiceconv.pricing import session_cost

pytestmark = pytest.mark.django_db

INLINE = {"telephony-TOTAL_FORMS": "0", "telephony-INITIAL_FORMS": "0"}


@pytest.fixture
def staff(client: Client) -> Client:
    user = User.objects.create_superuser("admin", "a@example.com", "pw")
    client.force_login(user)
    return client


def post(client: Client, **fields: str) -> tuple[int, str]:
    data = {"name": "Live", "slug": "live", "enabled": "on", "session_extra": "{}", **INLINE,
            **fields}
    response = client.post(reverse("admin:voiceconv_agent_add"), data)
    return response.status_code, response.content.decode()


def test_a_gpt_live_agent_is_saved_with_its_own_options(staff: Client) -> None:
    status, html = post(staff, backend="gpt-live", model="gpt-live-1.1", voice="cedar",
                        live_delegation_model="gpt-5", live_acknowledgement_delay_ms="300")
    assert status == 302, html[:2000]
    agent = Agent.objects.get(slug="live")
    assert agent.backend == "gpt-live"
    assert agent.live_overrides() == {"model": "gpt-live-1.1", "voice": "cedar",
                                      "delegation_model": "gpt-5",
                                      "acknowledgement_delay_ms": 300}
    page = staff.get(reverse("admin:voiceconv_agent_change", args=[agent.pk])).content.decode()
    assert 'name="live_delegation_model"' in page
    assert 'name="turn_detection_type"' not in page  # Realtime's options are not shown
    assert 'name="speed"' not in page
    assert "audio/pcmu" in page and "gpt-live-1.1" in page  # the session.start it gets


def test_realtime_options_on_a_gpt_live_agent_are_form_errors(staff: Client) -> None:
    status, html = post(staff, backend="gpt-live", turn_detection_type="semantic_vad",
                        speed="1.2", reasoning_effort="low")
    assert status == 200
    assert html.count("GPT-Live agents have no such option") == 3
    assert not Agent.objects.filter(slug="live").exists()


def test_a_gpt_live_agent_needs_a_gpt_live_model(staff: Client) -> None:
    status, html = post(staff, backend="gpt-live", model="gpt-realtime-2.1")
    assert status == 200 and "needs a GPT-Live model" in html
    status, html = post(staff, model="gpt-live-1")  # Realtime by default
    assert status == 200 and "is a GPT-Live model" in html


def test_gpt_live_options_on_a_realtime_agent_are_form_errors(staff: Client) -> None:
    status, html = post(staff, backend="realtime", live_delegation_model="gpt-5")
    assert status == 200 and "Realtime agents have no such option" in html
    status, _ = post(staff)  # no backend given: Realtime
    assert status == 302
    agent = Agent.objects.get(slug="live")
    assert agent.backend == "realtime"
    page = staff.get(reverse("admin:voiceconv_agent_change", args=[agent.pk])).content.decode()
    assert 'name="turn_detection_type"' in page and 'name="live_delegation_model"' not in page


def test_a_gpt_live_calls_page_shows_its_cost_from_seconds_and_the_export_carries_it(
    staff: Client,
) -> None:
    call = Call.objects.create(
        twilio_call_sid="CA" + "4" * 32, model="gpt-live-1", status="completed",
        duration_seconds=120,
    )
    call.set_session_seconds(120, 30)
    call.save()
    TranscriptEntry.objects.create(call=call, sequence=1, role="caller", text="Hello")
    page = staff.get(reverse("admin:voiceconv_call_change", args=[call.pk])).content.decode()
    expected = session_cost("gpt-live-1", 120, 30)
    assert expected == Decimal("0.085000")
    assert f"${expected:.4f}" in page  # the cost
    assert "$0.0425" in page  # per minute
    assert "billed session" in page and "2:00" in page
    assert "$0.05/min active, $0.02/min paused" in page and "confirm" in page
    labels = page.lower()  # the admin capitalises labels
    assert "paused session seconds" in labels
    assert "input_audio_tokens" not in page and "cached input audio tokens" not in labels

    response = staff.post(reverse("admin:voiceconv_call_changelist"),
                          {"action": "export_jsonl", "_selected_action": [call.pk]})
    (line,) = [json.loads(x) for x in response.content.decode().splitlines()]
    assert line["call_cost"] == {
        "model": "gpt-live-1", "estimated_cost_usd": "0.085000",
        "cost_per_minute_usd": "0.042500", "input_tokens": 0, "output_tokens": 0,
        "session_seconds": 120.0, "session_paused_seconds": 30.0,
    }
    response = staff.post(reverse("admin:voiceconv_call_changelist"),
                          {"action": "export_text", "_selected_action": [call.pk]})
    assert "cost $0.0850 (gpt-live-1)" in response.content.decode()


def test_a_realtime_calls_page_keeps_its_token_usage(staff: Client) -> None:
    call = Call.objects.create(twilio_call_sid="CA" + "5" * 32, model="gpt-realtime-2.1",
                               input_audio_tokens=1000)
    page = staff.get(reverse("admin:voiceconv_call_change", args=[call.pk])).content.decode()
    labels = page.lower()  # the admin capitalises labels
    assert "tokens in / out" in labels and "cached input audio tokens" in labels
    assert "paused session seconds" not in labels and "billed session" not in labels


def test_an_opening_clip_is_a_gpt_live_option_checked_in_the_form(
    staff: Client, tmp_path: Path, settings: Any,
) -> None:
    good = write_pcm_wav(tmp_path / "notice.wav", b"\x00\x01" * 24000)
    bad = write_pcm_wav(tmp_path / "phone.wav", b"\x00\x01" * 800, rate=8000)
    settings.VOICECONV = {"CLIPS": {"notice": {"path": str(good), "text": "Recorded."},
                                    "phone": str(bad)}}
    status, html = post(staff, backend="gpt-live", opening_clip="phone")
    assert status == 200 and "8000 Hz; GPT-Live plays mono 16-bit PCM at 24000 Hz" in html
    status, html = post(staff, backend="realtime", opening_clip="notice")
    assert status == 200 and "Realtime agents have no such option" in html
    status, html = post(staff, backend="gpt-live", opening_clip="notice")
    assert status == 302, html[:2000]
    agent = Agent.objects.get(slug="live")
    clip = opening_clip_for(agent)
    assert clip is not None and (clip.text, clip.duration_ms) == ("Recorded.", 1000)
    assert base64.b64decode(clip.audio) == b"\x00\x01" * 24000
    page = staff.get(reverse("admin:voiceconv_agent_change", args=[agent.pk])).content.decode()
    assert '<option value="notice" selected>' in page
