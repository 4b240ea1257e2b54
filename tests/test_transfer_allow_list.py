"""The per-agent transfer allow-list and the built-in send_dtmf tool, without a call."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from voiceconv.models import Agent, AgentTelephony
from voiceconv.models.telephony import allow_list_entry
from voiceconv.tools.registry import registry
from voiceconv.tools.runtime import ToolCall, ToolContext, execute_tool_call


class Control:
    def __init__(self, telephony: AgentTelephony) -> None:
        self.telephony = telephony
        self.actions: list[tuple[str, str]] = []

    def end_call(self, reason: str = "agent_ended") -> None:
        self.actions.append(("end", reason))

    def transfer_call(self, target: str) -> None:
        self.actions.append(("transfer", target))

    def transfer_refusal(self, target: str) -> str | None:
        return self.telephony.transfer_refusal(target)

    def send_dtmf(self, digits: str) -> None:
        self.actions.append(("dtmf", digits))


async def run(name: str, arguments: dict[str, Any], control: Any) -> dict[str, Any]:
    spec = registry.get(name)
    assert spec is not None
    result = await execute_tool_call(ToolCall("c", name, json.dumps(arguments)),
                                     {name: spec.bind()}, ToolContext(control=control))
    return dict(json.loads(result.output))


@pytest.mark.parametrize(("line", "saved"), [
    (" +1 (415) 555-0100 ", "+14155550100"),
    ("0044 20 7946 0958", "+442079460958"),
    ("+1415*", "+1415*"),
    ("sip:desk@example.com", "sip:desk@example.com"),
    ("sip:*", "sip:*"),
])
def test_allow_list_lines_are_normalised(line: str, saved: str) -> None:
    assert allow_list_entry(line) == saved


@pytest.mark.parametrize("line", ["555-0100", "front desk", "+1 415*", "*", "sip:nohost",
                                  "1415*"])
def test_bad_allow_list_lines_are_refused(line: str) -> None:
    with pytest.raises(ValueError, match=r"not"):
        allow_list_entry(line)


@pytest.mark.django_db
def test_the_admin_form_reports_each_bad_line_and_saves_the_rest_normalised() -> None:
    agent = Agent.objects.create(name="Desk", slug="desk")
    row = AgentTelephony(agent=agent, transfer_targets="+1 415 555 0100\nfront desk\n\n555*")
    with pytest.raises(ValidationError) as caught:
        row.full_clean()
    problems = caught.value.message_dict["transfer_targets"]
    assert len(problems) == 2 and "'front desk'" in problems[0] and "'555*'" in problems[1]
    row.transfer_targets = "+1 415 555 0100\n\n +4420*\nsip:desk@example.com"
    row.full_clean()
    row.save()
    row.refresh_from_db()
    assert row.transfer_targets == "+14155550100\n+4420*\nsip:desk@example.com"


def test_allowed_exact_and_by_prefix_and_an_empty_list_allows_nothing() -> None:
    row = AgentTelephony(transfer_targets="+14155550100\n+4420*\nsip:desk@example.com")
    assert row.transfer_refusal("+14155550100") is None
    assert row.transfer_refusal("+442079460958") is None
    assert row.transfer_refusal("sip:desk@example.com") is None
    assert "not one of the numbers" in str(row.transfer_refusal("+14155550101"))
    assert "no transfer targets" in str(AgentTelephony().transfer_refusal("+14155550100"))


def test_the_settings_default_applies_when_the_agents_list_is_blank(settings: Any) -> None:
    settings.VOICECONV = {"TRANSFER_ALLOW_LIST": ["+1415*"]}
    assert AgentTelephony().transfer_refusal("+14155550100") is None
    assert AgentTelephony(transfer_targets="+4420*").transfer_refusal("+14155550100")


async def test_transfer_call_refuses_a_target_off_the_list_with_words_to_say(
    caplog: pytest.LogCaptureFixture,
) -> None:
    control = Control(AgentTelephony(transfer_targets="+1415*"))
    out = await run("transfer_call", {"target": "+1 212 555 0199"}, control)
    assert out["status"] == "not_allowed" and out["target"] == "+12125550199"
    assert "Tell the caller" in out["error"]
    assert control.actions == []
    assert "transfer_call to +12125550199 refused" in caplog.text
    out = await run("transfer_call", {"target": "+1 415 555 0199"}, control)
    assert out["status"] == "transferring"
    assert control.actions == [("transfer", "+14155550199")]


@pytest.mark.parametrize(("digits", "sent"), [("1 2 3#", "123#"), ("w9a*", "w9A*")])
async def test_send_dtmf_tool(digits: str, sent: str) -> None:
    control = Control(AgentTelephony())
    assert await run("send_dtmf", {"digits": digits}, control) == {"status": "sent",
                                                                   "digits": sent}
    assert control.actions == [("dtmf", sent)]


@pytest.mark.parametrize("digits", ["", "12x", "1" * 33])
async def test_send_dtmf_tool_refuses_what_is_not_a_key_sequence(digits: str) -> None:
    control = Control(AgentTelephony())
    out = await run("send_dtmf", {"digits": digits}, control)
    assert out["status"] == "invalid_digits" and control.actions == []
    assert (await run("send_dtmf", {"digits": "1"}, None))["status"] == "unavailable"


async def test_warm_transfer_is_refused_off_the_list_and_asks_to_hold_on_it() -> None:
    calls: list[tuple[str, str]] = []

    class WarmControl(Control):
        def warm_transfer(self, target: str, brief: str) -> None:
            calls.append((target, brief))

    control = WarmControl(AgentTelephony(transfer_targets="+1415*"))
    out = await run("warm_transfer", {"target": "+12125550199", "brief": "x"}, control)
    assert out["status"] == "not_allowed" and calls == []
    out = await run("warm_transfer", {"target": "+1 415 555 0199", "brief": " Ada, refund. "},
                    control)
    assert out["status"] == "calling" and "hold" in out["instruction"]
    assert calls == [("+14155550199", "Ada, refund.")]


def test_the_human_hears_the_brief_then_starts_the_conference_the_caller_waits_in() -> None:
    from voiceconv.warm_transfer import conference_twiml, human_twiml

    assert human_twiml("Ada & the refund.", "room-1") == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Say>Ada &amp; the refund.</Say>'
        '<Dial><Conference beep="false" endConferenceOnExit="true" '
        'startConferenceOnEnter="true">room-1</Conference></Dial></Response>')
    assert 'startConferenceOnEnter="false"' in conference_twiml("room-1")
