"""The agent admin and the speech backend: the options each backend has, validated."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from voiceconv.models import Agent

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
