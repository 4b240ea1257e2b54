"""The server pays for the OpenAI SDK and client at start-up, not during the first call."""

from __future__ import annotations

import time
import urllib.request
from typing import Any

import pytest

from tests.conftest import server_env
from voiceconv import realtime
from voiceconv.testing.server import ServerProcess


@pytest.fixture
def fresh_clients(monkeypatch: pytest.MonkeyPatch) -> dict[Any, Any]:
    clients: dict[Any, Any] = {}
    monkeypatch.setattr(realtime, "_clients", clients)
    monkeypatch.setattr(realtime, "_tls_contexts", {})
    return clients


def test_warm_up_builds_the_client_the_calls_use(
    fresh_clients: dict[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", "https://127.0.0.1:9/v1")
    assert realtime.warm_up() is True
    assert list(fresh_clients.values()) == [realtime.default_openai_client()]
    assert len(realtime._tls_contexts) == 1  # the TLS context too, for an https base


def test_warm_up_without_a_key_leaves_it_to_the_first_call(
    fresh_clients: dict[Any, Any], monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    settings.OPENAI_API_KEY = ""
    assert realtime.warm_up() is False
    assert fresh_clients == {}


def test_warm_up_never_calls_a_project_factory(settings: Any) -> None:
    made: list[int] = []
    settings.VOICECONV = {"OPENAI_CLIENT_FACTORY": lambda: made.append(1)}
    assert realtime.warm_up() is False
    assert made == []


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("server_name", ["uvicorn", "daphne"])
def test_a_server_is_warm_before_its_first_call(server_name: str) -> None:
    env = {**server_env(9), "VOICECONV_LOG_LEVEL": "INFO"}
    with ServerProcess("project.asgi:application", server=server_name, env=env) as server:
        if server_name == "daphne":
            # No lifespan under daphne: the first connection (here a health probe) starts it.
            with urllib.request.urlopen(server.http_url + "/twilio/health/", timeout=30):
                pass
        deadline = time.monotonic() + 60
        while "OpenAI client ready" not in server.log_text():
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.1)
