"""Per-turn time to first audio where people read it: the call's page, the agent's p50/p90,
the transcript export, and the pre-connect option on the agent's form."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from tests.test_admin_calls import admin_client_, agent, make_call  # noqa: F401 (fixtures)
from voiceconv.models import Agent, Call, TranscriptEntry
from voiceconv.transcripts import as_text, entry_as_dict

pytestmark = pytest.mark.django_db


def timed_call(n: int, owner: Agent, answers: list[tuple[float, float]]) -> Call:
    """A call with a greeting (bridge share only) and answers of (model, bridge) ms."""
    call = make_call(n, owner)
    TranscriptEntry.objects.create(call=call, sequence=1, role="assistant", text="Hello!",
                                   offset_ms=0, bridge_ms=0.25)
    for i, (model, bridge) in enumerate(answers, start=2):
        TranscriptEntry.objects.create(
            call=call, sequence=i, role="assistant", text=f"Answer {i}.", offset_ms=1000 * i,
            latency_ms=round(model + bridge) + 500, first_audio_ms=model + bridge,
            model_ms=model, bridge_ms=bridge)
    return call


def test_the_call_page_shows_each_turn_and_the_call_percentiles(
    admin_client_: Client, agent: Agent  # noqa: F811
) -> None:
    call = timed_call(1, agent, [(640.0, 1.5), (820.0, 0.5)])
    html = admin_client_.get(reverse("admin:voiceconv_call_change", args=[call.pk])).content
    text = html.decode()
    assert "first audio 642 ms · model 640 ms · bridge 1.50 ms" in text
    assert "first audio 820 ms · model 820 ms · bridge 0.50 ms" in text
    assert "bridge 0.25 ms" in text  # the greeting: the bridge's share alone
    # The Timings panel: p50 / p90 over the call's turns.
    assert "caller stopped → first audio sent: p50 642 ms, p90 820 ms (2 turns)" in text
    assert "bridge&#x27;s share (delta → Twilio): p50 0.50 ms, p90 1.50 ms (3 turns)" in text


def test_the_agent_page_aggregates_the_turns_of_its_last_calls(
    admin_client_: Client, agent: Agent  # noqa: F811
) -> None:
    timed_call(1, agent, [(600.0, 1.0)])
    timed_call(2, agent, [(700.0, 2.0), (900.0, 3.0)])
    other = Agent.objects.create(name="Other", slug="other")
    timed_call(3, other, [(5000.0, 50.0)])  # another agent's call is not counted
    html = admin_client_.get(reverse("admin:voiceconv_agent_change", args=[agent.pk])).content
    text = html.decode()
    assert '<table class="vc-turn-timing">' in text
    assert "<td>caller stopped → first audio sent</td><td>702 ms</td><td>903 ms</td><td>3</td>" \
        in text
    assert "<td>model&#x27;s share (→ first delta)</td><td>700 ms</td><td>900 ms</td><td>3</td>" \
        in text
    assert "<td>bridge&#x27;s share (delta → Twilio)</td><td>1.00 ms</td><td>3.00 ms</td>" \
        "<td>5</td>" in text


def test_the_export_carries_the_turn_timings(agent: Agent) -> None:  # noqa: F811
    call = timed_call(1, agent, [(640.0, 1.5)])
    greeting, answer = call.transcript_entries.order_by("sequence")
    row = json.loads(json.dumps(entry_as_dict(answer)))
    assert (row["first_audio_ms"], row["model_ms"], row["bridge_ms"]) == (641.5, 640.0, 1.5)
    row = entry_as_dict(greeting)
    assert (row["first_audio_ms"], row["model_ms"], row["bridge_ms"]) == (None, None, 0.25)
    text = as_text(call)
    assert "first audio 642 ms: model 640 ms, bridge 1.50 ms" in text
    assert "(bridge 0.25 ms)" in text


def test_pre_connect_is_an_option_on_the_agent_form(
    admin_client_: Client, agent: Agent  # noqa: F811
) -> None:
    url = reverse("admin:voiceconv_agent_change", args=[agent.pk])
    form = admin_client_.get(url).content.decode()
    assert 'name="preconnect"' in form
    assert not agent.preconnect
    data = {
        "name": agent.name, "slug": agent.slug, "enabled": "on", "preconnect": "on",
        "session_extra": "{}", "telephony-TOTAL_FORMS": "0", "telephony-INITIAL_FORMS": "0",
    }
    response = admin_client_.post(url, data)
    assert response.status_code == 302, response.content.decode()[:2000]
    agent.refresh_from_db()
    assert agent.preconnect
