"""voiceconv's error family, the insecure-setup warning and the per-call log adapter."""

from __future__ import annotations

import logging
import warnings

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from voiceconv import exceptions, security
from voiceconv.calllog import CallLog
from voiceconv.conf import voiceconv_settings
from voiceconv.events import CallInfo
from voiceconv.exceptions import (
    ConfigurationError,
    InsecureSetupWarning,
    LocalProtocolError,
    OpenAIProtocolError,
    ProtocolError,
    RemoteProtocolError,
    ToolArgumentsError,
    ToolDeclarationError,
    TwilioProtocolError,
    VoiceconvError,
)
from voiceconv.session import ToolCall
from voiceconv.tools.registry import Tool
from voiceconv.tools.runtime import ToolContext, execute_tool_call


def test_every_error_is_in_the_family_except_configuration_errors() -> None:
    errors = [
        getattr(exceptions, name) for name in exceptions.__all__
        if isinstance(getattr(exceptions, name), type)
        and issubclass(getattr(exceptions, name), Exception)
        and not issubclass(getattr(exceptions, name), Warning)
    ]
    for error in errors:
        assert error.__name__.endswith("Error")
        if issubclass(error, ImproperlyConfigured):
            # Outside the base: an ``except VoiceconvError`` never swallows a broken setup.
            assert not issubclass(error, VoiceconvError), error
        else:
            assert issubclass(error, VoiceconvError), error
    assert issubclass(ToolDeclarationError, ConfigurationError)
    assert issubclass(ToolArgumentsError, ValueError)


def test_protocol_errors_say_whose_fault_they_are() -> None:
    assert TwilioProtocolError.fault == "twilio"
    assert OpenAIProtocolError.fault == "openai"
    assert LocalProtocolError.fault == "voiceconv"
    assert issubclass(TwilioProtocolError, RemoteProtocolError)
    assert issubclass(OpenAIProtocolError, RemoteProtocolError)
    assert not issubclass(LocalProtocolError, RemoteProtocolError)
    for error in (TwilioProtocolError, OpenAIProtocolError, LocalProtocolError):
        assert issubclass(error, ProtocolError)
        assert error("x").fault == error.fault


@override_settings(VOICECONV=["not", "a", "dict"])
def test_a_bad_settings_value_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="VOICECONV must be a dict"):
        _ = voiceconv_settings.MODEL


def test_a_bad_tool_is_a_declaration_error_naming_the_function() -> None:
    def broken(*args: int) -> None:
        """Broken."""

    with pytest.raises(ToolDeclarationError, match="broken"):
        Tool.from_function(broken)


@pytest.mark.parametrize(
    ("debug", "voiceconv", "warned"),
    [
        (False, {"VALIDATE_TWILIO_SIGNATURE": False}, True),
        (True, {"VALIDATE_TWILIO_SIGNATURE": False}, False),
        (False, {}, False),
    ],
)
def test_signature_checks_off_warn_outside_debug(
    debug: bool, voiceconv: dict[str, object], warned: bool
) -> None:
    with override_settings(DEBUG=debug, VOICECONV=voiceconv), warnings.catch_warnings(
        record=True
    ) as caught:
        warnings.simplefilter("always")
        enabled = security.signature_checks_enabled()
    assert enabled is not bool(voiceconv)
    insecure = [w for w in caught if issubclass(w.category, InsecureSetupWarning)]
    assert bool(insecure) is warned
    if warned:
        assert "VALIDATE_TWILIO_SIGNATURE" in str(insecure[0].message)
        assert insecure[0].filename == __file__  # points at the caller


def test_stream_token_not_required_warns_outside_debug() -> None:
    off = override_settings(DEBUG=False, VOICECONV={"REQUIRE_STREAM_TOKEN": False})
    with off, pytest.warns(InsecureSetupWarning, match="REQUIRE_STREAM_TOKEN"):
        assert security.stream_token_required() is False
    with override_settings(DEBUG=False, VOICECONV={}), warnings.catch_warnings():
        warnings.simplefilter("error", InsecureSetupWarning)
        assert security.stream_token_required() is True


def test_call_log_prefixes_the_call_and_puts_its_sid_on_the_record(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="voiceconv.test")
    log = CallLog(logging.getLogger("voiceconv.test"), "CA" + "1" * 32)
    log.info("hello %s", "there", extra={"other": 1})
    CallLog(logging.getLogger("voiceconv.test")).info("before start")
    first, second = caplog.records
    assert first.getMessage() == f"call CA{'1' * 32}: hello there"
    assert first.call_sid == "CA" + "1" * 32  # type: ignore[attr-defined]
    assert first.other == 1  # type: ignore[attr-defined]
    assert second.getMessage() == "call ?: before start"


async def test_tool_errors_are_logged_through_the_call_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="voiceconv.tools")
    sid = "CA" + "7" * 32
    context = ToolContext(call=CallInfo(call_sid=sid, stream_sid="MZ" + "7" * 32))
    result = await execute_tool_call(ToolCall("c9", "missing", "{}"), {}, context)
    assert not result.ok
    (record,) = [r for r in caplog.records if r.name == "voiceconv.tools"]
    assert record.getMessage() == f"call {sid}: tool call c9: Unknown tool 'missing'"
    assert record.call_sid == sid  # type: ignore[attr-defined]


def _webhook_asks() -> bool:
    return security.signature_checks_enabled()


def _stream_asks() -> bool:
    return security.signature_checks_enabled() and security.stream_token_required()


def test_an_insecure_setup_is_warned_about_once_per_process_however_many_places_ask() -> None:
    off = override_settings(
        DEBUG=False,
        VOICECONV={"VALIDATE_TWILIO_SIGNATURE": False, "REQUIRE_STREAM_TOKEN": False},
    )
    with off, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # even so: once per setting
        for _ in range(3):
            _webhook_asks()
            _stream_asks()
            security.stream_token_required()
    insecure = [str(w.message) for w in caught if issubclass(w.category, InsecureSetupWarning)]
    assert len(insecure) == 2, insecure
    assert "VALIDATE_TWILIO_SIGNATURE" in insecure[0] and "REQUIRE_STREAM_TOKEN" in insecure[1]
    # A new setup (settings changed, as in another process) is warned about again.
    with off, pytest.warns(InsecureSetupWarning, match="VALIDATE_TWILIO_SIGNATURE"):
        _webhook_asks()
