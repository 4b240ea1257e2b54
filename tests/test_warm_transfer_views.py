"""The warm transfer's status callback for the person's leg, with requests signed for real."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.urls import reverse

from tests.conftest import AUTH_TOKEN, PUBLIC_URL, post_as_twilio
from voiceconv.consumers import MediaStreamConsumer
from voiceconv.models import Call, WarmTransfer

pytestmark = pytest.mark.django_db(transaction=True)

SID = "CA" + "d" * 32


@pytest.fixture(autouse=True)
def _settings(settings: Any) -> None:
    settings.TWILIO_AUTH_TOKEN = AUTH_TOKEN
    settings.VOICECONV = {"PUBLIC_URL": PUBLIC_URL}


def transfer() -> WarmTransfer:
    call = Call.objects.create(twilio_call_sid=SID)
    return WarmTransfer.objects.create(call=call, target="+14155550188", brief="b",
                                       conference=f"voiceconv-{SID}")


def test_the_status_is_recorded_and_sent_to_the_live_call() -> None:
    row = transfer()
    layer = get_channel_layer()
    holder = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(MediaStreamConsumer.group_name(SID), holder)
    path = reverse("voiceconv:warm-transfer-status") + f"?transfer={row.pk}"
    response = post_as_twilio(path, {"CallSid": "CA" + "e" * 32, "CallStatus": "no-answer"})
    assert response.status_code == 204
    message = async_to_sync(layer.receive)(holder)
    assert message == {"type": "voiceconv.warm_transfer", "transfer": row.pk,
                       "status": "no-answer"}
    row.refresh_from_db()
    assert row.human_status == "no-answer" and row.status == "dialling"


def test_unsigned_and_incomplete_callbacks_are_refused(caplog: pytest.LogCaptureFixture) -> None:
    row = transfer()
    path = reverse("voiceconv:warm-transfer-status") + f"?transfer={row.pk}"
    assert post_as_twilio(path, {"CallStatus": "in-progress"}, sign=False).status_code == 403
    assert post_as_twilio(reverse("voiceconv:warm-transfer-status"),
                          {"CallStatus": "in-progress"}).status_code == 400
    assert "without CallStatus or transfer" in caplog.text
    row.refresh_from_db()
    assert row.human_status == ""
