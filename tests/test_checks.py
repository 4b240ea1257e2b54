"""System checks: unknown settings and insecure "who gets in" configurations."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from django.core.checks import Error, Warning, run_checks
from django.test import override_settings

from tests.conftest import ROOT
from voiceconv.checks import check_security, check_settings

SECURE: dict[str, Any] = {"DEBUG": False, "TWILIO_AUTH_TOKEN": "secret", "VOICECONV": {}}


def ids(messages: list[Any]) -> set[str]:
    return {m.id for m in messages}


def test_secure_defaults_are_quiet() -> None:
    with override_settings(**SECURE):
        assert check_security() == []
        assert check_settings() == []


def test_unknown_key_is_an_error() -> None:
    with override_settings(VOICECONV={"MODLE": "x"}):
        [msg] = check_settings()
    assert isinstance(msg, Error)
    assert msg.id == "voiceconv.E002"
    assert "'MODLE'" in msg.msg


def test_non_dict_setting_is_an_error_and_security_check_stays_quiet() -> None:
    with override_settings(VOICECONV=["x"]):
        assert ids(check_settings()) == {"voiceconv.E001"}
        assert check_security() == []


@pytest.mark.parametrize(("debug", "expected"), [(False, {"voiceconv.W001"}), (True, set())])
def test_signature_checks_off_warns_outside_debug(debug: bool, expected: set[str]) -> None:
    with override_settings(
        DEBUG=debug, TWILIO_AUTH_TOKEN="", VOICECONV={"VALIDATE_TWILIO_SIGNATURE": False}
    ):
        messages = check_security()
    assert ids(messages) == expected
    assert all(isinstance(m, Warning) for m in messages)


@pytest.mark.parametrize("debug", [False, True])
def test_checks_on_without_auth_token_warns_in_any_mode(debug: bool) -> None:
    with override_settings(DEBUG=debug, TWILIO_AUTH_TOKEN="", VOICECONV={}):
        [msg] = check_security()
    assert msg.id == "voiceconv.W002"
    assert "403" in msg.msg


def test_missing_auth_token_setting_counts_as_empty() -> None:
    with override_settings(DEBUG=False, VOICECONV={}):
        from django.conf import settings

        del settings.TWILIO_AUTH_TOKEN
        assert ids(check_security()) == {"voiceconv.W002"}


@pytest.mark.parametrize(("debug", "expected"), [(False, {"voiceconv.W003"}), (True, set())])
def test_stream_token_off_warns_outside_debug(debug: bool, expected: set[str]) -> None:
    with override_settings(
        DEBUG=debug, TWILIO_AUTH_TOKEN="secret", VOICECONV={"REQUIRE_STREAM_TOKEN": False}
    ):
        assert ids(check_security()) == expected


@pytest.mark.parametrize(
    ("url", "warns"),
    [
        ("https://voice.example.com", False),
        ("http://127.0.0.1:8000", False),
        ("voice.example.com", True),
        ("wss://voice.example.com", True),
        ("https://", True),
    ],
)
def test_public_url_must_be_an_http_origin(url: str, warns: bool) -> None:
    with override_settings(**{**SECURE, "VOICECONV": {"PUBLIC_URL": url}}):
        assert ids(check_security()) == ({"voiceconv.W004"} if warns else set())


def test_everything_insecure_at_once() -> None:
    with override_settings(
        DEBUG=False,
        TWILIO_AUTH_TOKEN="",
        VOICECONV={"VALIDATE_TWILIO_SIGNATURE": False, "REQUIRE_STREAM_TOKEN": False},
    ):
        assert ids(check_security()) == {"voiceconv.W001", "voiceconv.W003"}


@pytest.mark.django_db
def test_checks_are_registered_with_django() -> None:
    with override_settings(
        DEBUG=False, TWILIO_AUTH_TOKEN="", VOICECONV={"VALIDATE_TWILIO_SIGNATURE": False}
    ):
        found = ids(run_checks(include_deployment_checks=False))
        security_only = ids(run_checks(tags=["security"]))
    assert "voiceconv.W001" in found
    assert "voiceconv.W001" in security_only


@pytest.mark.parametrize(
    ("extra", "check_id"),
    [
        ({"TWILIO_AUTH_TOKEN": ""}, "voiceconv.W002"),
        ({"DEBUG": "0", "VOICECONV_VALIDATE_TWILIO_SIGNATURE": "false"}, "voiceconv.W001"),
    ],
)
def test_manage_py_check_prints_each_warning_once(extra: dict[str, str], check_id: str) -> None:
    """The example project's ``manage.py check``: a setup problem is said once, not per caller."""
    env = {**os.environ, "SECRET_KEY": "test-" + "x" * 40, "ALLOWED_HOSTS": "127.0.0.1", **extra}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(
        [sys.executable, "-W", "default", "manage.py", "check"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=120,
    )
    output = done.stdout + done.stderr
    assert output.count(check_id) == 1, output
    assert "InsecureSetupWarning" not in output or output.count("InsecureSetupWarning") == 1
