"""The outbound answer URL and the answering-machine callback, with requests signed for real."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.test import Client
from twilio.request_validator import RequestValidator

from tests.conftest import AUTH_TOKEN, PUBLIC_URL, post_as_twilio
from voiceconv import security
from voiceconv.consumers import MediaStreamConsumer
from voiceconv.models import Agent, Call

pytestmark = pytest.mark.django_db(transaction=True)

SID = "CA" + "c" * 32


@pytest.fixture(autouse=True)
def _settings(settings: Any) -> None:
    settings.TWILIO_AUTH_TOKEN = AUTH_TOKEN
    settings.VOICECONV = {"PUBLIC_URL": PUBLIC_URL}


def outbound_call(**fields: Any) -> Call:
    agent = Agent.objects.create(name="Sales", slug="sales")
    defaults = dict(twilio_call_sid="pending-1", agent=agent, direction="outbound-api",
                    from_number="+14155550100", to_number="+14155550123",
                    custom_parameters={"lead": "42"})
    defaults.update(fields)
    return Call.objects.create(**defaults)


def test_answer_connects_the_stream_with_agent_parameters_and_token() -> None:
    call = outbound_call()
    response = post_as_twilio(f"/twilio/outbound/answer/?call={call.pk}",
                              {"CallSid": SID, "AccountSid": "AC1", "CallStatus": "in-progress"})
    assert response.status_code == 200
    stream = ET.fromstring(response.content).find("Connect/Stream")
    assert stream is not None
    assert stream.get("url") == "wss://voice.example.test/twilio/stream/"
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert params["agent"] == str(call.agent_id)
    assert params["lead"] == "42"
    assert params["direction"] == "outbound-api"
    assert (params["from"], params["to"]) == ("+14155550100", "+14155550123")
    assert security.check_stream_token(params["call_token"], SID) is None
    call.refresh_from_db()
    assert call.twilio_call_sid == SID  # the placeholder gave way to Twilio's CallSid
    assert call.webhook_received_at is not None


def test_answer_refuses_unsigned_and_foreign_calls() -> None:
    call = outbound_call(twilio_call_sid="CA" + "d" * 32)
    path = f"/twilio/outbound/answer/?call={call.pk}"
    assert post_as_twilio(path, {"CallSid": SID}, sign=False).status_code == 403
    # Signed over another URL (a different call id): refused.
    form = {"CallSid": SID}
    signature = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC_URL + path, form)
    response = Client().post(f"/twilio/outbound/answer/?call={call.pk + 1}", form,
                             HTTP_X_TWILIO_SIGNATURE=signature)
    assert response.status_code == 403
    # Signed, but the call already has another CallSid.
    assert post_as_twilio(path, {"CallSid": SID}).status_code == 400


def test_amd_verdict_is_recorded_and_reaches_the_calls_group() -> None:
    call = outbound_call(twilio_call_sid=SID)
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(MediaStreamConsumer.group_name(SID), channel)
    response = post_as_twilio("/twilio/outbound/amd/", {
        "CallSid": SID, "AnsweredBy": "machine_end_beep", "MachineDetectionDuration": "2730"})
    assert response.status_code == 204
    call.refresh_from_db()
    assert (call.answered_by, call.machine_detection_ms) == ("machine_end_beep", 2730)
    message = async_to_sync(layer.receive)(channel)
    assert message == {"type": "voiceconv.amd", "answered_by": "machine_end_beep"}


def test_amd_callback_refuses_forgeries_and_nonsense(caplog: Any) -> None:
    call = outbound_call(twilio_call_sid=SID)
    form = {"CallSid": SID, "AnsweredBy": "human"}
    assert post_as_twilio("/twilio/outbound/amd/", form, sign=False).status_code == 403
    robot = {"CallSid": SID, "AnsweredBy": "robot"}
    assert post_as_twilio("/twilio/outbound/amd/", robot).status_code == 400
    assert "unknown AnsweredBy 'robot'" in caplog.text
    call.refresh_from_db()
    assert call.answered_by == ""


def test_agent_admin_edits_the_telephony_settings(client: Client) -> None:
    from django.contrib.auth.models import User
    from django.urls import reverse

    from voiceconv.models import AgentTelephony

    User.objects.create_superuser("boss", "boss@example.test", "pw")
    client.login(username="boss", password="pw")
    page = client.get(reverse("admin:voiceconv_agent_add")).content.decode()
    assert "On an answering machine" in page and "Transfer targets" in page
    data = {
        "name": "Sales", "slug": "sales", "enabled": "on", "session_extra": "{}",
        "telephony-TOTAL_FORMS": "1", "telephony-INITIAL_FORMS": "0",
        "telephony-0-on_machine": "voicemail", "telephony-0-voicemail_mode": "prompt",
        "telephony-0-voicemail_message": "Call us back.", "telephony-0-greeting_wait": "amd",
        "telephony-0-announce_recording": "on", "telephony-0-transfer_targets": "+1415*",
        "telephony-0-max_concurrent_outbound": "3",
    }
    response = client.post(reverse("admin:voiceconv_agent_add"), data)
    assert response.status_code == 302, response.content.decode()[:3000]
    telephony = AgentTelephony.objects.get(agent__slug="sales")
    assert telephony.machine_detection() == "DetectMessageEnd"
    assert telephony.concurrent_limit() == 3
    assert telephony.allows_transfer_to("+14155550100")
    assert not telephony.allows_transfer_to("+442079460958")
