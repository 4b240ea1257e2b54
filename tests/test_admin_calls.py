"""The call and agent admin, through the Django test client."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from voiceconv.models import Agent, Call, ToolDefinition, ToolInvocation, TranscriptEntry

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:voiceconv_call_changelist"


@pytest.fixture
def admin_client_(client: Client) -> Client:
    user = User.objects.create_superuser("boss", "boss@example.com", "pw")
    client.force_login(user)
    return client


@pytest.fixture
def agent() -> Agent:
    Agent.objects.all().delete()
    return Agent.objects.create(name="Support", slug="support", voice="cedar",
                                instructions="Help with orders.", vad_silence_duration_ms=700)


def make_call(n: int, agent: Agent | None = None, **fields: object) -> Call:
    defaults: dict[str, object] = {
        "twilio_call_sid": f"CA{n:032x}",
        "twilio_stream_sid": f"MZ{n:032x}",
        "from_number": f"+1415555{n:04d}",
        "to_number": "+14155550199",
        "agent": agent,
        "direction": "inbound",
        "status": "completed",
        "end_reason": "caller_hung_up",
        "stream_started_at": timezone.now() - dt.timedelta(minutes=n),
        "duration_seconds": 83.0,
        "estimated_cost": Decimal("0.012345"),
    }
    defaults.update(fields)
    return Call.objects.create(**defaults)


@pytest.fixture
def call(agent: Agent) -> Call:
    call = make_call(1, agent)
    entries = [
        dict(role="caller", text="Where is my order <42>?", offset_ms=1200),
        dict(role="assistant", text="Let me check that for you.", offset_ms=2500, latency_ms=600),
        dict(role="tool", text='lookup_order {"order_id": "42"}', offset_ms=2600),
        dict(role="assistant", text="It shipped yesterday & arrives on Friday morning.",
             offset_ms=4100, latency_ms=800, interrupted=True, heard_ms=1200, total_ms=3400,
             heard_text="It shipped yesterday"),
        dict(role="caller", text="Great, thanks", offset_ms=5000),
        dict(role="dtmf", text="5", offset_ms=7000),
        dict(role="assistant", text="Goodbye!", offset_ms=8000, latency_ms=1000),
    ]
    for i, fields in enumerate(entries, start=1):
        TranscriptEntry.objects.create(call=call, sequence=i, **fields)
    ToolInvocation.objects.create(
        call=call, tool_name="lookup_order", openai_call_id="call_xyz",
        arguments='{"order_id": "42"}', output='{"status": "shipped"}',
        started_at=timezone.now(), duration_ms=37,
    )
    return call


def test_changelist_columns(admin_client_: Client, call: Call,
                            django_assert_max_num_queries: object) -> None:
    for n in range(2, 12):
        other = make_call(n, call.agent)
        TranscriptEntry.objects.create(call=other, sequence=1, role="assistant", text="hi",
                                       latency_ms=100 * n)
    with django_assert_max_num_queries(12):  # type: ignore[operator]
        response = admin_client_.get(reverse(CHANGELIST))
    assert response.status_code == 200
    html = response.content.decode()
    row = response.context["cl"].result_list.get(pk=call.pk)
    assert row.turns == 5  # caller and assistant turns only
    assert "+14155550001 → +14155550199" in html
    assert "1:23" in html  # duration
    assert "800 ms" in html  # median of 600, 800, 1000
    assert "$0.0123" in html
    assert "Support" in html
    assert "created_at__year=" in html  # the date hierarchy
    # Records are reviewed, not added.
    assert reverse("admin:voiceconv_call_add") not in html


def test_search_by_number_sid_and_transcript_text(admin_client_: Client, call: Call) -> None:
    other = make_call(2, None, from_number="+447700900000")
    TranscriptEntry.objects.create(call=other, sequence=1, role="caller", text="Cancel please")
    TranscriptEntry.objects.create(call=other, sequence=2, role="caller", text="cancel it")

    def found(q: str) -> set[str]:
        response = admin_client_.get(reverse(CHANGELIST), {"q": q})
        assert response.status_code == 200
        return {c.twilio_call_sid for c in response.context["cl"].result_list}

    assert found("arrives on Friday") == {call.twilio_call_sid}
    assert found("cancel") == {other.twilio_call_sid}  # one row despite two matching entries
    assert found("+447700900000") == {other.twilio_call_sid}
    assert found(call.twilio_stream_sid) == {call.twilio_call_sid}
    assert found("nothing like this") == set()


def test_filters(admin_client_: Client, call: Call) -> None:
    failed = make_call(2, None, status="failed", direction="outbound-api")
    url = reverse(CHANGELIST)

    def listed(params: dict[str, str]) -> set[int]:
        response = admin_client_.get(url, params)
        assert response.status_code == 200
        return {c.pk for c in response.context["cl"].result_list}

    assert listed({"status__exact": "failed"}) == {failed.pk}
    assert listed({"agent__id__exact": str(call.agent_id)}) == {call.pk}
    assert listed({"direction": "outbound-api"}) == {failed.pk}
    today = timezone.localdate()
    assert listed({"created_at__year": str(today.year), "created_at__month": str(today.month),
                   "created_at__day": str(today.day)}) == {call.pk, failed.pk}


def test_call_page_shows_the_conversation(admin_client_: Client, call: Call) -> None:
    response = admin_client_.get(reverse("admin:voiceconv_call_change", args=[call.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    # Read-only: no save buttons, no form inputs for the call's fields.
    assert 'name="_save"' not in html
    assert 'name="from_number"' not in html
    # The conversation, escaped, in order, with the unheard tail struck through.
    assert "Where is my order &lt;42&gt;?" in html
    assert (
        '<span class="vc-heard">It shipped yesterday</span>'
        '<del class="vc-unheard" title="not heard by the caller">'
        " &amp; arrives on Friday morning.</del>"
    ) in html
    assert "interrupted · heard 1.2 s of 3.4 s" in html
    assert "600 ms" in html and "1000 ms" in html
    assert html.index("Where is my order") < html.index("Let me check") < html.index("Goodbye!")
    assert 'class="vc-turn vc-dtmf vc-event"' in html
    assert 'class="vc-turn vc-tool vc-event"' in html
    # Timings and usage panels, tool invocations inline.
    assert "Timings" in html and "Usage" in html
    assert "call_xyz" in html and "lookup_order" in html and "37" in html
    assert response.context["conversation"][3]["unheard"] == " & arrives on Friday morning."


def test_export_actions(admin_client_: Client, call: Call) -> None:
    other = make_call(2, None)
    TranscriptEntry.objects.create(call=other, sequence=1, role="caller", text="Other call")
    url = reverse(CHANGELIST)
    response = admin_client_.post(
        url, {"action": "export_jsonl", "_selected_action": [call.pk]}
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/x-ndjson")
    assert "attachment;" in response["Content-Disposition"]
    assert response["Content-Disposition"].rstrip('"').endswith(".jsonl")
    lines = [json.loads(line) for line in response.content.decode().splitlines()]
    assert [o["sequence"] for o in lines] == [1, 2, 3, 4, 5, 6, 7]
    assert {o["call_sid"] for o in lines} == {call.twilio_call_sid}
    assert lines[3]["interrupted"] is True and lines[3]["heard_ms"] == 1200
    assert lines[3]["heard_text"] == "It shipped yesterday"

    response = admin_client_.post(
        url, {"action": "export_text", "_selected_action": [call.pk, other.pk]}
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    assert f"Call {call.twilio_call_sid}" in text and f"Call {other.twilio_call_sid}" in text
    assert "It shipped yesterday [unheard: & arrives on Friday morning.]" in text
    assert "Caller: Other call" in text


def test_view_only_staff_cannot_delete(client: Client, call: Call) -> None:
    staff = User.objects.create_user("viewer", password="pw", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_call"))
    client.force_login(staff)
    response = client.get(reverse("admin:voiceconv_call_change", args=[call.pk]))
    assert response.status_code == 200
    assert "It shipped yesterday" in response.content.decode()
    response = client.get(reverse("admin:voiceconv_call_delete", args=[call.pk]))
    assert response.status_code == 403
    assert Call.objects.filter(pk=call.pk).exists()


def test_superuser_may_delete(admin_client_: Client, call: Call) -> None:
    response = admin_client_.post(
        reverse("admin:voiceconv_call_delete", args=[call.pk]), {"post": "yes"}
    )
    assert response.status_code == 302
    assert not Call.objects.filter(pk=call.pk).exists()
    assert not TranscriptEntry.objects.filter(call_id=call.pk).exists()


def test_agent_page_shows_the_effective_session_config(admin_client_: Client,
                                                       agent: Agent) -> None:
    response = admin_client_.get(reverse("admin:voiceconv_agent_change", args=[agent.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Effective session config" in html
    assert "&quot;voice&quot;: &quot;cedar&quot;" in html
    assert "&quot;silence_duration_ms&quot;: 700" in html
    assert "Help with orders." in html
    assert "audio/pcmu" in html
    # Every option is editable, tools chosen with the horizontal filter.
    for field in ("vad_threshold", "vad_eagerness", "transcription_prompt", "noise_reduction",
                  "reasoning_effort", "max_output_tokens", "speed", "phone_numbers"):
        assert f'name="{field}"' in html
    assert 'name="tools"' in html and "selectfilter" in html.lower()

    response = admin_client_.get(reverse("admin:voiceconv_agent_add"))
    assert response.status_code == 200
    assert "save the agent to see its own config" in response.content.decode()


def test_agent_admin_edits_and_keeps_one_default(admin_client_: Client, agent: Agent) -> None:
    tool = ToolDefinition.objects.filter(enabled=True).first()
    data = {
        "name": "Sales", "slug": "sales", "enabled": "on", "is_default": "on",
        "phone_numbers": "+1 415 555 0123", "voice": "marin", "speed": "1.1",
        "turn_detection_type": "semantic_vad", "vad_eagerness": "low",
        "session_extra": "{}", "tools": [tool.pk] if tool else [],
        # The telephony inline (left empty).
        "telephony-TOTAL_FORMS": "0", "telephony-INITIAL_FORMS": "0",
    }
    response = admin_client_.post(reverse("admin:voiceconv_agent_add"), data)
    assert response.status_code == 302, response.content.decode()[:2000]
    sales = Agent.objects.get(slug="sales")
    assert sales.phone_numbers == "+14155550123" and sales.is_default
    assert Agent.objects.for_number("+14155550123") == sales
    assert sales.session_overrides()["turn_detection"]["eagerness"] == "low"
    if tool:
        assert list(sales.tools.all()) == [tool]
    # A second default is refused with a message on the form.
    data.update(name="Other", slug="other", phone_numbers="")
    response = admin_client_.post(reverse("admin:voiceconv_agent_add"), data)
    assert response.status_code == 200
    assert "already the default agent" in response.content.decode()


def test_call_list_shows_the_end_reason(admin_client_: Client, call: Call) -> None:
    make_call(2, None, end_reason="openai_error", status="failed")
    response = admin_client_.get(reverse(CHANGELIST))
    html = response.content.decode()
    assert "<th" in html and "end reason" in html.lower()
    assert '<td class="field-ended_because">caller hung up</td>' in html
    assert '<td class="field-ended_because">OpenAI error</td>' in html


def test_call_page_timings_read_to_the_millisecond(admin_client_: Client, agent: Agent) -> None:
    webhook = dt.datetime(2026, 12, 1, 21, 47, 5, 123000, tzinfo=dt.UTC)
    call = make_call(
        3, agent,
        webhook_received_at=webhook,
        stream_started_at=webhook + dt.timedelta(milliseconds=412),
        first_audio_at=webhook + dt.timedelta(milliseconds=1734),
        ended_at=webhook + dt.timedelta(seconds=83, milliseconds=500),
    )
    ToolInvocation.objects.create(
        call=call, tool_name="get_time", openai_call_id="call_1", arguments="{}",
        output='{"time": "21:47"}', started_at=webhook + dt.timedelta(seconds=6, milliseconds=12),
        duration_ms=37,
    )
    url = reverse("admin:voiceconv_call_change", args=[call.pk])
    html = admin_client_.get(url).content.decode()
    assert "2026-12-01 21:47:05.123 UTC" in html  # the webhook: the call's start
    assert "21:47:05.535 (+0.412 s)" in html  # stream start
    assert "21:47:06.857 (+1.734 s)" in html  # first audio
    assert "21:48:28.623 (+83.500 s)" in html  # end
    assert "p.m." not in html  # no minute-only dates
    # The tool invocation: called 6.012 s into the call, took 37 ms, no stray caption.
    assert '<td class="field-called">+6.012 s</td>' in html
    assert '<td class="field-duration">37 ms</td>' in html
    assert "get_time (ok, 37 ms)" not in html
    assert reverse("admin:voiceconv_toolinvocation_change", args=[
        ToolInvocation.objects.get(call=call).pk]) in html


@pytest.mark.django_db
def test_an_empty_call_list_says_how_to_get_a_call(admin_client_: Client, settings: object) -> None:
    Call.objects.all().delete()
    settings.VOICECONV = {"PUBLIC_URL": "https://voice.example.org"}  # type: ignore[attr-defined]
    html = admin_client_.get(reverse(CHANGELIST)).content.decode()
    assert "No calls yet" in html
    assert "<code>https://voice.example.org/twilio/incoming/</code>" in html
    assert "<code>https://voice.example.org/twilio/status/</code>" in html
    assert "without a phone" in html
    # A filter that matches nothing is not "no calls yet".
    make_call(4, None)
    html = admin_client_.get(reverse(CHANGELIST), {"status__exact": "busy"}).content.decode()
    assert "No calls yet" not in html
