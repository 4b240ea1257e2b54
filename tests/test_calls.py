"""Outbound calls: place_call and voiceconv_dial against the loopback Twilio REST stand-in."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.utils import timezone

from voiceconv.calls import (
    OUTBOUND_DIRECTION,
    OutboundCallError,
    aplace_call,
    normalize_e164,
    place_call,
)
from voiceconv.models import Agent, AgentTelephony, Call
from voiceconv.testing.twilio_api import FakeTwilioAPI

pytestmark = pytest.mark.django_db

ACCOUNT = "AC" + "a" * 32
TOKEN = "secret-token"
PUBLIC = "https://voice.example.test"
CALLEE = "+14155550123"


@pytest.fixture
def api(settings: Any) -> Iterator[FakeTwilioAPI]:
    with FakeTwilioAPI() as fake:
        settings.TWILIO_ACCOUNT_SID = ACCOUNT
        settings.TWILIO_AUTH_TOKEN = TOKEN
        settings.VOICECONV = {"TWILIO_API_BASE": fake.url, "PUBLIC_URL": PUBLIC}
        yield fake


@pytest.fixture
def agent() -> Agent:
    return Agent.objects.create(name="Sales", slug="sales", phone_numbers="+14155550100")


def test_place_call_records_the_call_and_asks_twilio(api: FakeTwilioAPI, agent: Agent) -> None:
    call = place_call("+1 (415) 555-0123", agent="sales", custom_parameters={"lead": "42"})
    [placed] = api.calls.values()
    assert call.twilio_call_sid == placed.sid
    assert call.direction == OUTBOUND_DIRECTION
    assert (call.to_number, call.from_number) == (CALLEE, "+14155550100")
    assert call.agent == agent
    assert call.custom_parameters == {"lead": "42"}
    assert call.status == Call.Status.RINGING
    assert placed.to == CALLEE and placed.from_ == "+14155550100"
    assert placed.param("Url") == f"{PUBLIC}/twilio/outbound/answer/?call={call.pk}"
    assert placed.param("StatusCallback") == f"{PUBLIC}/twilio/status/"
    assert placed.form["StatusCallbackEvent"] == ["ringing", "answered", "completed"]
    # The default policy hangs up on machines: AMD without waiting for the beep.
    assert placed.param("MachineDetection") == "Enable"
    assert placed.param("AsyncAmd") == "true"
    assert placed.param("AsyncAmdStatusCallback") == f"{PUBLIC}/twilio/outbound/amd/"


def test_voicemail_policy_waits_for_the_beep_and_talk_policy_needs_no_detection(
    api: FakeTwilioAPI, agent: Agent
) -> None:
    telephony = AgentTelephony.objects.create(
        agent=agent, on_machine=AgentTelephony.OnMachine.VOICEMAIL
    )
    place_call(CALLEE, agent=agent)
    telephony.on_machine = AgentTelephony.OnMachine.TALK
    telephony.save()
    agent.refresh_from_db()
    place_call(CALLEE, agent=agent, status_callback=False)
    first, second = api.calls.values()
    assert first.param("MachineDetection") == "DetectMessageEnd"
    assert second.param("MachineDetection") == ""
    assert second.param("StatusCallback") == ""


def test_caller_id_comes_from_the_agent_setting_then_the_argument(
    api: FakeTwilioAPI, agent: Agent
) -> None:
    AgentTelephony.objects.create(agent=agent, caller_id="+14155550177")
    agent.refresh_from_db()
    assert place_call(CALLEE, agent=agent).from_number == "+14155550177"
    assert place_call(CALLEE, agent=agent, from_="+14155550188").from_number == "+14155550188"


@pytest.mark.parametrize("number", ["4155550123", "+0123456789", "+1 415 555", "", "+12"])
def test_bad_numbers_are_refused_before_twilio_is_asked(
    api: FakeTwilioAPI, agent: Agent, number: str
) -> None:
    with pytest.raises(OutboundCallError) as info:
        place_call(number, agent=agent)
    assert info.value.reason == "invalid_number"
    assert api.requests == [] and Call.objects.count() == 0


def test_normalize_e164() -> None:
    assert normalize_e164("0044 20 7946 0958") == "+442079460958"
    with pytest.raises(ValueError, match="international format"):
        normalize_e164("555-0123")


def test_reserved_custom_parameter_names_are_refused(api: FakeTwilioAPI, agent: Agent) -> None:
    with pytest.raises(OutboundCallError, match="call_token") as info:
        place_call(CALLEE, agent=agent, custom_parameters={"call_token": "x"})
    assert info.value.reason == "bad_parameters"


def test_unknown_agent_is_refused(api: FakeTwilioAPI) -> None:
    with pytest.raises(OutboundCallError, match="no agent 'nobody'"):
        place_call(CALLEE, agent="nobody", from_="+14155550100")


def test_concurrent_cap_per_agent(api: FakeTwilioAPI, agent: Agent) -> None:
    AgentTelephony.objects.create(agent=agent, max_concurrent_outbound=2)
    agent.refresh_from_db()
    first = place_call(CALLEE, agent=agent)
    place_call(CALLEE, agent=agent)
    with pytest.raises(OutboundCallError, match="2 outbound calls in progress") as info:
        place_call(CALLEE, agent=agent)
    assert info.value.reason == "concurrent_limit"
    # Another agent has its own budget.
    other = Agent.objects.create(name="Other", slug="other", phone_numbers="+14155550111")
    place_call(CALLEE, agent=other)
    # A finished call frees its place.
    Call.objects.filter(pk=first.pk).update(status="completed", ended_at=timezone.now())
    place_call(CALLEE, agent=agent)
    assert len(api.calls) == 4


def test_calls_per_minute_per_agent(api: FakeTwilioAPI, agent: Agent, settings: Any) -> None:
    settings.VOICECONV = {**settings.VOICECONV, "OUTBOUND_CALLS_PER_MINUTE": 2,
                          "OUTBOUND_MAX_CONCURRENT": 0}
    place_call(CALLEE, agent=agent)
    second = place_call(CALLEE, agent=agent)
    with pytest.raises(OutboundCallError, match="in the last minute") as info:
        place_call(CALLEE, agent=agent)
    assert info.value.reason == "rate_limit"
    Call.objects.filter(pk=second.pk).update(created_at=timezone.now() - timedelta(seconds=61))
    place_call(CALLEE, agent=agent)


@pytest.mark.parametrize(
    ("code", "meaning"),
    [
        (21211, "not a valid phone number"),
        (21210, "caller ID is not verified"),
        (21215, "geo permissions"),
        (13227, "geo permissions"),
    ],
)
def test_twilio_refusals_are_recorded_logged_and_raised(
    api: FakeTwilioAPI, agent: Agent, caplog: Any, code: int, meaning: str
) -> None:
    api.fail_next(code, "The request was refused.")
    with caplog.at_level(logging.ERROR, logger="voiceconv.calls"), pytest.raises(
        OutboundCallError
    ) as info:
        place_call(CALLEE, agent=agent)
    error = info.value
    assert error.reason == "twilio" and error.twilio_code == code
    assert meaning in str(error)
    assert error.call is not None
    call = Call.objects.get(pk=error.call.pk)
    assert call.status == Call.Status.FAILED and call.ended_at is not None
    assert f"Twilio error {code}" in call.error and meaning in call.error
    [record] = [r for r in caplog.records if r.name == "voiceconv.calls"]
    assert record.exc_info is None and meaning in record.getMessage()


def test_unreachable_twilio_is_recorded(api: FakeTwilioAPI, agent: Agent, settings: Any) -> None:
    from voiceconv.testing.server import free_port

    settings.VOICECONV = {**settings.VOICECONV,
                          "TWILIO_API_BASE": f"http://127.0.0.1:{free_port()}"}
    with pytest.raises(OutboundCallError, match="could not be reached") as info:
        place_call(CALLEE, agent=agent)
    assert info.value.reason == "unreachable"
    assert Call.objects.get().status == Call.Status.FAILED


def test_public_url_is_required(api: FakeTwilioAPI, agent: Agent, settings: Any) -> None:
    settings.VOICECONV = {"TWILIO_API_BASE": api.url}
    with pytest.raises(ImproperlyConfigured, match="PUBLIC_URL"):
        place_call(CALLEE, agent=agent)


@pytest.mark.django_db(transaction=True)
async def test_aplace_call(api: FakeTwilioAPI) -> None:
    agent = await Agent.objects.acreate(name="A", slug="a", phone_numbers="+14155550100")
    call = await aplace_call(CALLEE, agent=agent.pk)
    assert call.twilio_call_sid in api.calls
    assert await Call.objects.filter(direction=OUTBOUND_DIRECTION).acount() == 1


def test_dial_command(api: FakeTwilioAPI, agent: Agent) -> None:
    out = StringIO()
    call_command("voiceconv_dial", CALLEE, "--agent", "sales", "--param", "lead=7",
                 "--machine-detection", "off", stdout=out)
    [placed] = api.calls.values()
    assert out.getvalue().startswith(f"{placed.sid}: calling {CALLEE}")
    assert placed.param("MachineDetection") == ""
    assert Call.objects.get().custom_parameters == {"lead": "7"}


def test_dial_command_reports_errors_in_one_line(api: FakeTwilioAPI, agent: Agent) -> None:
    api.fail_next(21219, "The number is unverified.")
    with pytest.raises(CommandError, match="Twilio error 21219: the number to call is not "
                       "verified"):
        call_command("voiceconv_dial", CALLEE, "--agent", "sales")
    with pytest.raises(CommandError, match="international format"):
        call_command("voiceconv_dial", "12345", "--agent", "sales")
