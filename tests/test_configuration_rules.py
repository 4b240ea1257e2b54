"""Every agent configuration either works or is refused (issue 9, rule 5), and agent choice."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.forms import modelform_factory
from django.test import override_settings

from voiceconv.checks import check_settings
from voiceconv.events import our_number
from voiceconv.models import Agent
from voiceconv.realtime import build_session_config, create_response_enabled


@override_settings(VOICECONV={"TURN_DETECTION": None})
def test_turn_detection_off_in_the_settings_is_a_system_check_error() -> None:
    errors = [e for e in check_settings() if e.id == "voiceconv.E003"]
    assert len(errors) == 1
    assert "never answer" in errors[0].msg and "create_response" in (errors[0].hint or "")


def test_turn_detection_on_passes_the_check() -> None:
    assert not [e for e in check_settings() if e.id == "voiceconv.E003"]


@pytest.mark.django_db
def test_the_agent_form_refuses_turn_detection_off_with_a_clear_message() -> None:
    form_class = modelform_factory(Agent, fields=["name", "slug", "turn_detection_type"])
    form = form_class(data={"name": "Quiet", "slug": "quiet", "turn_detection_type": "none"})
    assert not form.is_valid()
    assert "Turn detection off is not supported" in form.errors["turn_detection_type"][0]
    ok = form_class(data={"name": "Vad", "slug": "vad", "turn_detection_type": "server_vad"})
    assert ok.is_valid(), ok.errors
    with pytest.raises(ValidationError):
        Agent(name="q", slug="q", turn_detection_type="none").full_clean()


def test_create_response_false_is_read_from_the_session() -> None:
    td = {"type": "server_vad", "create_response": False}
    assert create_response_enabled(build_session_config({"turn_detection": td})) is False
    assert create_response_enabled(build_session_config({})) is True


@pytest.mark.parametrize(
    ("direction", "expected"),
    [("inbound", "+15550000002"), ("outbound-api", "+15550000001"),
     ("outbound-dial", "+15550000001"), ("", "+15550000002")],
)
def test_the_agent_is_chosen_by_our_caller_facing_number(direction: str, expected: str) -> None:
    assert our_number(direction, "+15550000001", "+15550000002") == expected
    from voiceconv.models import Call

    assert {Call.Direction.OUTBOUND_API, Call.Direction.OUTBOUND_DIAL} == {
        "outbound-api", "outbound-dial"}


@pytest.mark.django_db
def test_claim_stream_picks_the_agent_of_the_number_we_call_from() -> None:
    from voiceconv.events import CallInfo
    from voiceconv.models import Call

    ours = Agent.objects.create(name="Out", slug="out", phone_numbers="+15550000001")
    Agent.objects.create(name="Them", slug="them", phone_numbers="+15550000002")
    info = CallInfo(call_sid="CA1", stream_sid="MZ1", direction="outbound-api",
                    from_number="+15550000001", to_number="+15550000002")
    claim = Call.objects.claim_stream(info)
    assert not isinstance(claim, str)
    call, agent = claim
    assert agent == ours and call.agent == ours
    again = CallInfo(call_sid="CA1", stream_sid="MZ2")
    assert Call.objects.claim_stream(again) == "call already has stream MZ1"
