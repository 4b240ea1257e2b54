"""The metrics endpoint (access, Prometheus text format) and the health endpoint."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from voiceconv import health, metrics
from voiceconv.models import Call

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/twilio/metrics/"
TOKEN = "scrape-token-0123456789"


def samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def test_metrics_refuse_without_the_credential(client: Client) -> None:
    assert client.get(URL).status_code == 403
    client.force_login(User.objects.create_user("nobody", password="pw"))
    assert client.get(URL).status_code == 403  # logged in, not staff
    client.logout()
    with override_settings(VOICECONV={"METRICS_TOKEN": TOKEN}):
        assert client.get(URL, headers={"Authorization": "Bearer wrong"}).status_code == 403
        assert client.get(URL, headers={"Authorization": TOKEN}).status_code == 403
        assert client.get(URL, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    # Without a token configured, no bearer header gets in.
    assert client.get(URL, headers={"Authorization": "Bearer "}).status_code == 403


def test_metrics_for_staff_in_the_prometheus_text_format(client: Client) -> None:
    now = timezone.now()
    Call.objects.create(twilio_call_sid="CA" + "1" * 32, twilio_stream_sid="MZ1",
                        stream_started_at=now, heartbeat_at=now, status="in-progress")
    class Consumer:  # what metrics reads off a consumer: plain integers it keeps
        session = SimpleNamespace(state=SimpleNamespace(frames_in=50, frames_out=20),
                                  bad_input={"not json": 2})

    consumer = Consumer()
    before = samples(metrics.generate_latest(metrics.REGISTRY))
    metrics.observe_consumer(consumer)
    consumer.session.state.frames_in = 75
    metrics.observe_consumer(consumer, final=True)
    metrics.turn_recorded(SimpleNamespace(role="assistant", latency_ms=640, interrupted=True))
    metrics.tool_invoked(SimpleNamespace(tool_name="lookup", error="", duration_ms=120))
    metrics.call_ended(SimpleNamespace(first_audio_at=now, stream_started_at=now
                                       - dt.timedelta(milliseconds=900)), "caller_hung_up")
    client.force_login(User.objects.create_user("ops", password="pw", is_staff=True))
    response = client.get(URL)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    after = samples(response.content)

    def grew(name: str, labels: dict[str, str] | None = None) -> float:
        key = (name, tuple(sorted((labels or {}).items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert grew("voiceconv_frames_total", {"direction": "in"}) == 75
    assert grew("voiceconv_frames_total", {"direction": "out"}) == 20
    assert grew("voiceconv_bad_input_total", {"kind": "not json"}) == 2
    assert grew("voiceconv_barge_ins_total") == 1
    assert grew("voiceconv_response_latency_seconds_count") == 1
    assert grew("voiceconv_tool_calls_total", {"tool": "lookup", "outcome": "ok"}) == 1
    assert grew("voiceconv_calls_ended_total", {"reason": "caller_hung_up"}) == 1
    assert grew("voiceconv_time_to_first_audio_seconds_sum") == pytest.approx(0.9)
    assert after[("voiceconv_calls_live", ())] == 1


def test_timings_a_call_kept_are_observed_once(client: Client) -> None:
    class Consumer:  # timings in ns the consumer keeps between two looks
        session = SimpleNamespace(state=SimpleNamespace(frames_in=0, frames_out=0),
                                  bad_input={})
        added_latency_ns = [2_000_000, 500_000]
        barge_in_ns = [3_000_000]

    consumer = Consumer()
    before = samples(metrics.generate_latest(metrics.REGISTRY))
    metrics.observe_consumer(consumer)
    metrics.observe_consumer(consumer, final=True)  # nothing new: nothing observed twice
    assert consumer.added_latency_ns == [] and consumer.barge_in_ns == []
    client.force_login(User.objects.create_user("ops", password="pw", is_staff=True))
    after = samples(client.get(URL).content)

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    added = "voiceconv_caller_audio_added_latency_seconds"
    assert grew(f"{added}_count") == 2
    assert grew(f"{added}_sum") == pytest.approx(0.0025)
    assert grew(f"{added}_bucket", le="0.001") == 1
    assert grew(f"{added}_bucket", le="0.0025") == 2
    barge = "voiceconv_barge_in_reaction_seconds"
    assert grew(f"{barge}_count") == 1
    assert grew(f"{barge}_bucket", le="0.0025") == 0
    assert grew(f"{barge}_bucket", le="0.005") == 1


async def test_health_answers_ok_and_503_while_draining(settings: Any) -> None:
    from django.test import AsyncClient

    # A layer of this test's own: a Redis layer object that earlier tests used from their
    # event loops is not one this loop can check (servers have one loop; see test_e2e_draining).
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

    client = AsyncClient()
    response = await client.get("/twilio/health/")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok" and body["database"] == "ok"
    assert body["channel_layer"] == "ok" and body["draining"] is False
    health.start_draining()
    try:
        response = await client.get("/twilio/health/")
        assert response.status_code == 503
        assert response.json()["status"] == "draining"
    finally:
        health.stop_draining()


def test_a_draining_process_answers_new_calls_busy(client: Client) -> None:
    from twilio.request_validator import RequestValidator

    from voiceconv.conf import voiceconv_settings

    token, public = "unit-test-auth-token-0123456789ab", "https://voice.example.com"
    form = {"CallSid": "CA" + "2" * 32, "From": "+14155550123", "To": "+14155550100"}
    signature = RequestValidator(token).compute_signature(public + "/twilio/incoming/", form)
    health.start_draining()
    try:
        with override_settings(TWILIO_AUTH_TOKEN=token, VOICECONV={"PUBLIC_URL": public}):
            response = client.post("/twilio/incoming/", form,
                                   headers={"X-Twilio-Signature": signature})
            busy = str(voiceconv_settings.BUSY_MESSAGE)
    finally:
        health.stop_draining()
    assert response.status_code == 200
    text = response.content.decode()
    assert "<Hangup" in text and busy in text and "<Stream" not in text
