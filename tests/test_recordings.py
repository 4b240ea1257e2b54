"""Recordings: Twilio's status callback stored on the call; the audio served to staff only."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from twilio.request_validator import RequestValidator

from voiceconv.models import Call, Recording
from voiceconv.recordings import start_recording
from voiceconv.testing.twilio_api import FakeTwilioAPI

pytestmark = pytest.mark.django_db(transaction=True)

ACCOUNT = "AC" + "a" * 32
TOKEN = "secret-token"
PUBLIC = "https://voice.example.test"
SID = "CA" + "e" * 32


@pytest.fixture
def api(settings: Any) -> Iterator[FakeTwilioAPI]:
    with FakeTwilioAPI(auth_token=TOKEN, recording_audio=b"RIFF-fake-wave") as fake:
        settings.TWILIO_ACCOUNT_SID = ACCOUNT
        settings.TWILIO_AUTH_TOKEN = TOKEN
        settings.VOICECONV = {"TWILIO_API_BASE": fake.url, "PUBLIC_URL": PUBLIC}
        yield fake


def signed_post(path: str, form: dict[str, str]) -> Any:
    signature = RequestValidator(TOKEN).compute_signature(PUBLIC + path, form)
    return Client().post(path, form, HTTP_X_TWILIO_SIGNATURE=signature)


def test_start_recording_asks_for_a_dual_channel_recording(api: FakeTwilioAPI) -> None:
    sid = start_recording(SID)
    recording = api.recordings[sid or ""]
    assert recording.call_sid == SID
    assert recording.param("RecordingChannels") == "dual"
    assert recording.param("RecordingStatusCallback") == f"{PUBLIC}/twilio/recording/status/"


def test_callback_is_stored_and_the_player_is_for_staff_only(api: FakeTwilioAPI) -> None:
    call = Call.objects.create(twilio_call_sid=SID)
    sid = start_recording(SID) or ""
    form = {
        "AccountSid": ACCOUNT, "CallSid": SID, "RecordingSid": sid,
        "RecordingUrl": f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Recordings/{sid}",
        "RecordingStatus": "completed", "RecordingDuration": "42", "RecordingChannels": "2",
        "RecordingSource": "StartCallRecordingAPI", "ErrorCode": "0",
    }
    assert Client().post("/twilio/recording/status/", form).status_code == 403  # unsigned
    assert signed_post("/twilio/recording/status/", form).status_code == 204
    recording = Recording.objects.get(call=call)
    assert (recording.url, recording.duration_seconds, recording.channels) == (
        form["RecordingUrl"], 42, 2)
    assert recording.status == "completed" and recording.error_code == ""

    audio_url = f"/twilio/recording/{recording.pk}/audio/"
    anonymous = Client().get(audio_url)
    assert anonymous.status_code == 302 and "/admin/login/" in anonymous["Location"]
    User.objects.create_user("clerk", password="pw")
    clerk = Client()
    clerk.login(username="clerk", password="pw")
    assert clerk.get(audio_url).status_code == 302
    User.objects.create_user("staff", password="pw", is_staff=True)
    staff = Client()
    staff.login(username="staff", password="pw")
    response = staff.get(audio_url)
    assert response.status_code == 200
    assert response.content == b"RIFF-fake-wave"
    assert response["Cache-Control"] == "private, no-store"
    # Fetched with the account's credentials, from the app, not by the browser.
    [fetch] = [r for r in api.requests if r.method == "GET"]
    assert fetch.path.endswith(f"/Recordings/{sid}.wav")
    assert fetch.headers["Authorization"].startswith("Basic ")
