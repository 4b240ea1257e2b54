"""The app sets itself up in any project: tools synced and a default agent after migrate,
checks that say what is missing, quiet commands."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from django.apps import apps
from django.core.management import call_command
from django.test import Client, override_settings

from voiceconv.apps import setup_after_migrate
from voiceconv.checks_setup import (
    check_default_agent,
    check_deployment,
    unimported_tool_modules,
)
from voiceconv.models import Agent, ToolDefinition


def ids(messages: list[object]) -> set[str]:
    return {m.id for m in messages}  # type: ignore[attr-defined]


@pytest.mark.django_db
def test_migrate_syncs_tools_and_creates_a_default_agent_with_the_project_tools() -> None:
    Agent.objects.all().delete()
    ToolDefinition.objects.all().delete()
    setup_after_migrate(apps.get_app_config("voiceconv"), using="default", verbosity=0)
    assert set(ToolDefinition.objects.values_list("name", flat=True)) >= {
        "get_time", "end_call", "transfer_call"
    }
    agent = Agent.objects.get()
    assert agent.is_default and agent.enabled
    # The project's own tools, not the built-in call control.
    assert sorted(agent.tools.values_list("name", flat=True)) == ["get_time"]
    # An existing agent is left alone: no second one.
    agent.is_default = False
    agent.save()
    setup_after_migrate(apps.get_app_config("voiceconv"), using="default", verbosity=0)
    assert Agent.objects.count() == 1


@pytest.mark.django_db
def test_the_setup_is_voiceconvs_own_not_the_example_projects() -> None:
    from django.db.models.signals import post_migrate

    voiceconv = apps.get_app_config("voiceconv")
    receivers = post_migrate._live_receivers(voiceconv)[0]
    assert setup_after_migrate in receivers
    assert not any(getattr(r, "__module__", "").startswith("project.") for r in receivers)


@pytest.mark.django_db
def test_no_default_agent_is_a_check_and_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    Agent.objects.all().delete()
    assert ids(check_default_agent(databases=["default"])) == {"voiceconv.W005"}
    assert check_default_agent(databases=None) == []
    with caplog.at_level(logging.WARNING, logger="voiceconv.agents"):
        assert Agent.objects.for_number("+14155550100") is None
    assert "no enabled default agent" in caplog.text and "admin" in caplog.text
    Agent.objects.create(name="A", slug="a", is_default=True)
    assert check_default_agent(databases=["default"]) == []


def test_a_tool_module_never_imported_is_flagged(tmp_path: Path) -> None:
    module = Path(apps.get_app_config("project").path) / "stray_tools_for_test.py"
    module.write_text('from voiceconv import tool\n\n\n@tool\ndef stray() -> str:\n    return ""\n')
    try:
        flagged = dict(unimported_tool_modules())
        assert "project.stray_tools_for_test" in flagged
        assert "project.tools" not in flagged  # imported at start-up
    finally:
        module.unlink()
    assert "project.stray_tools_for_test" not in dict(unimported_tool_modules())


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_deploy_checks() -> None:
    with override_settings(OPENAI_API_KEY="", DEBUG=True, VOICECONV={"PUBLIC_URL": ""}):
        import os

        saved = os.environ.pop("OPENAI_API_KEY", None)
        try:
            assert ids(check_deployment()) == {"voiceconv.W020", "voiceconv.W021"}
        finally:
            if saved is not None:
                os.environ["OPENAI_API_KEY"] = saved
    sqlite = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "x"}}
    memory = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    with override_settings(
        OPENAI_API_KEY="sk-x", DEBUG=False, VOICECONV={"PUBLIC_URL": "https://v.example"},
        DATABASES=sqlite, CHANNEL_LAYERS=memory,
    ):
        assert ids(check_deployment()) == {"voiceconv.W022", "voiceconv.W023"}
    redis = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer"}}
    postgres = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "x"}}
    with override_settings(
        OPENAI_API_KEY="sk-x", DEBUG=False, VOICECONV={"PUBLIC_URL": "https://v.example"},
        DATABASES=postgres, CHANNEL_LAYERS=redis,
    ):
        assert check_deployment() == []


@pytest.mark.django_db
def test_the_refusal_says_why(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    with override_settings(TWILIO_AUTH_TOKEN=""), caplog.at_level(logging.WARNING):
        assert client.post("/twilio/incoming/", {"CallSid": "CA1"}).status_code == 403
    assert "TWILIO_AUTH_TOKEN is empty" in caplog.text
    caplog.clear()
    with override_settings(TWILIO_AUTH_TOKEN="tok"), caplog.at_level(logging.WARNING):
        assert client.post("/twilio/incoming/", {"CallSid": "CA1"}).status_code == 403
        assert client.post("/twilio/incoming/", {"CallSid": "CA1"},
                           HTTP_X_TWILIO_SIGNATURE="bad").status_code == 403
    assert "no X-Twilio-Signature header" in caplog.text
    assert "does not match" in caplog.text


@pytest.mark.django_db
def test_sync_tools_is_quiet_with_verbosity_0() -> None:
    out, err = io.StringIO(), io.StringIO()
    call_command("voiceconv_sync_tools", verbosity=0, stdout=out, stderr=err)
    assert out.getvalue() == "" and err.getvalue() == ""
    call_command("voiceconv_sync_tools", stdout=out, stderr=err)
    assert "in sync" in out.getvalue()
