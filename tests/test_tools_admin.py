"""Admin pages for tool definitions and invocations, through the Django test client."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from voiceconv.admin.tools import ToolInvocationInline
from voiceconv.models import Agent, Call, ToolDefinition, ToolInvocation
from voiceconv.tools.registry import registry, tool

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:voiceconv_tooldefinition_changelist"


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_changelist_shows_registration_and_agent_counts(admin_client: Any) -> None:
    ToolDefinition.objects.create(name="retired_tool", timeout_seconds=4)
    Agent.objects.create(name="Two", slug="two").tools.add(
        *ToolDefinition.objects.filter(name__in=["get_time", "end_call"])
    )
    response = admin_client.get(reverse(CHANGELIST))
    assert response.status_code == 200
    rows = {obj.name: obj for obj in response.context["cl"].result_list}
    assert set(rows) == {"end_call", "get_time", "retired_tool", "send_dtmf", "transfer_call",
                         "warm_transfer"}
    assert rows["get_time"]._agent_count == 2  # the example default agent and "Two"
    assert rows["retired_tool"]._agent_count == 0
    html = response.content.decode()
    # All six are enabled; the orphan's "registered" icon is the only "no".
    assert html.count('alt="False"') == 1
    model_admin = admin.site._registry[ToolDefinition]
    registered = [model_admin.registered(rows[n]) for n in sorted(rows)]
    assert registered == [True, True, False, True, True, True]
    assert '<td class="field-effective_timeout">4</td>' in html
    assert '<td class="field-effective_timeout">10 (default)</td>' in html


def test_sync_action_with_selection(admin_client: Any) -> None:
    with registry.isolated():

        @tool
        def brand_new() -> str:
            """New in code."""
            return "x"

        ToolDefinition.objects.create(name="retired_tool")
        response = admin_client.post(
            reverse(CHANGELIST),
            {"action": "sync_from_code",
             ACTION_CHECKBOX_NAME: [ToolDefinition.objects.get(name="get_time").pk]},
            follow=True,
        )
    assert response.status_code == 200
    assert ToolDefinition.objects.get(name="brand_new").description == "New in code."
    [message] = messages_of(response)
    assert message == (
        "Tool definitions synced from code: 1 created, 0 updated, 5 unchanged. "
        "Not registered in code (never offered): retired_tool."
    )


def test_sync_action_without_selection(admin_client: Any) -> None:
    ToolDefinition.objects.filter(name="end_call").delete()
    response = admin_client.post(
        reverse(CHANGELIST), {"action": "sync_from_code", "index": "0"}, follow=True
    )
    assert response.status_code == 200
    assert ToolDefinition.objects.filter(name="end_call").exists()
    assert messages_of(response) == [
        "Tool definitions synced from code: 1 created, 0 updated, 4 unchanged."
    ]


def test_sync_action_needs_change_permission(client: Any, django_user_model: Any) -> None:
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_tooldefinition"))
    client.force_login(user)
    ToolDefinition.objects.filter(name="end_call").delete()
    client.post(reverse(CHANGELIST), {"action": "sync_from_code", "index": "0"})
    assert not ToolDefinition.objects.filter(name="end_call").exists()


def test_change_form_flags_orphan_and_shows_code(admin_client: Any) -> None:
    orphan = ToolDefinition.objects.create(name="retired_tool")
    html = admin_client.get(
        reverse("admin:voiceconv_tooldefinition_change", args=[orphan.pk])
    ).content.decode()
    assert "Not registered: no @tool function has this name" in html

    get_time = ToolDefinition.objects.get(name="get_time")
    html = admin_client.get(
        reverse("admin:voiceconv_tooldefinition_change", args=[get_time.pk])
    ).content.decode()
    assert "<code>project.tools:get_time</code>" in html
    assert "&quot;additionalProperties&quot;: false" in html  # generated schema, read-only


def test_change_form_validates_override(admin_client: Any) -> None:
    definition = ToolDefinition.objects.get(name="transfer_call")
    url = reverse("admin:voiceconv_tooldefinition_change", args=[definition.pk])
    data = {
        "enabled": "on",
        "description": "Transfer to the front desk.",
        "parameters_override": '{"type": "object", "properties": {}}',
        "timeout_seconds": "5",
        "holding_message": "",
    }
    response = admin_client.post(url, data)
    assert response.status_code == 200
    assert "needs target" in response.content.decode()

    data["parameters_override"] = (
        '{"type": "object", "properties": {"target": {"type": "string", '
        '"enum": ["+14155550100"]}}, "required": ["target"]}'
    )
    response = admin_client.post(url, data)
    assert response.status_code == 302
    definition.refresh_from_db()
    assert definition.parameters_override["properties"]["target"]["enum"] == ["+14155550100"]
    assert definition.timeout_seconds == 5
    assert definition.description == "Transfer to the front desk."


def test_add_form_requires_registered_name(admin_client: Any) -> None:
    response = admin_client.post(
        reverse("admin:voiceconv_tooldefinition_add"),
        {"name": "nothing_here", "enabled": "on", "parameters_override": "null",
         "timeout_seconds": "", "holding_message": "", "description": ""},
    )
    assert response.status_code == 200
    assert "No tool named nothing_here is registered" in response.content.decode()
    assert not ToolDefinition.objects.filter(name="nothing_here").exists()


def make_invocations() -> tuple[Call, ToolInvocation, ToolInvocation]:
    call = Call.objects.create(twilio_call_sid="CA" + "c" * 32)
    now = timezone.now()
    ok = ToolInvocation.objects.create(
        call=call, tool_name="get_time", openai_call_id="call_ok", arguments="{}",
        output='{"time": "10:00"}', started_at=now, duration_ms=12,
    )
    failed = ToolInvocation.objects.create(
        call=call, tool_name="transfer_call", openai_call_id="call_bad",
        arguments='{"target": "x"}', output='{"error": "boom"}', error="boom",
        traceback="Traceback ...", started_at=now + timedelta(seconds=1), duration_ms=3,
    )
    return call, ok, failed


def test_invocation_admin_is_read_only_and_filters(admin_client: Any) -> None:
    call, ok, failed = make_invocations()
    url = reverse("admin:voiceconv_toolinvocation_changelist")
    with CaptureQueriesContext(connection) as two_rows:
        response = admin_client.get(url)
    assert [o.pk for o in response.context["cl"].result_list] == [failed.pk, ok.pk]
    for i in range(5):
        other = Call.objects.create(twilio_call_sid=f"CA{i:032d}")
        ToolInvocation.objects.create(
            call=other, tool_name="get_time", started_at=ok.started_at - timedelta(minutes=i + 1)
        )
    with CaptureQueriesContext(connection) as seven_rows:
        assert len(admin_client.get(url).context["cl"].result_list) == 7
    assert len(seven_rows) == len(two_rows)  # the call comes with select_related

    def listed(query: dict[str, str]) -> list[int]:
        return [o.pk for o in admin_client.get(url, query).context["cl"].result_list]

    assert listed({"outcome": "error"}) == [failed.pk]
    assert listed({"outcome": "ok"})[0] == ok.pk
    assert listed({"tool_name": "transfer_call"}) == [failed.pk]
    assert listed({"q": "call_bad"}) == [failed.pk]
    assert set(listed({"q": call.twilio_call_sid})) == {ok.pk, failed.pk}

    assert admin_client.get(reverse("admin:voiceconv_toolinvocation_add")).status_code == 403
    change = reverse("admin:voiceconv_toolinvocation_change", args=[failed.pk])
    response = admin_client.get(change)
    assert response.status_code == 200  # viewable
    assert "Traceback ..." in response.content.decode()
    admin_client.post(change, {"tool_name": "edited"})
    failed.refresh_from_db()
    assert failed.tool_name == "transfer_call"


def test_invocation_inline_is_read_only() -> None:
    from django.test import RequestFactory

    request = RequestFactory().get("/")
    inline = ToolInvocationInline(Call, admin.site)
    assert inline.has_add_permission(request) is False
    assert inline.has_change_permission(request) is False
    assert set(inline.readonly_fields) == set(inline.fields)


def test_an_empty_tools_table_says_what_to_do_and_syncs(admin_client: Any) -> None:
    ToolDefinition.objects.all().delete()
    html = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert "No tool definitions yet" in html
    assert "voiceconv_sync_tools" in html and "@tool" in html
    # Its button syncs the definitions from code.
    response = admin_client.post(reverse(CHANGELIST), {"action": "sync_from_code"}, follow=True)
    assert response.status_code == 200
    assert ToolDefinition.objects.filter(name="get_time").exists()
    assert "No tool definitions yet" not in response.content.decode()
