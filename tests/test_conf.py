"""Typed settings: every key declared, values checked once, limits and timeouts as objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from voiceconv.conf import (
    DEFAULTS,
    CallLimits,
    Timeouts,
    VoiceconvSettings,
    setting_types,
    voiceconv_settings,
)
from voiceconv.exceptions import ConfigurationError


def test_every_setting_has_a_declared_type_and_its_default_fits_it() -> None:
    declared = setting_types()
    assert list(declared) == list(DEFAULTS), (
        "Declare each VOICECONV key in DEFAULTS as an annotation on VoiceconvSettings too "
        f"(in the same order): {set(declared) ^ set(DEFAULTS) or 'order differs'}"
    )
    fresh = VoiceconvSettings()
    with override_settings(VOICECONV={}):
        for name, default in DEFAULTS.items():
            value = getattr(fresh, name)
            assert value == default or (default is None and value is None), name


@pytest.mark.parametrize(
    ("name", "given", "read"),
    [
        ("CONNECT_TIMEOUT", 3, 3.0),
        ("CONNECT_TIMEOUT", "2.5", 2.5),
        ("MAX_CONCURRENT_CALLS", "12", 12),
        ("MAX_CONCURRENT_CALLS", 12.0, 12),
        ("MAX_OUTPUT_TOKENS", 4096, 4096),
        ("MAX_OUTPUT_TOKENS", "inf", "inf"),
        ("GREETING", None, ""),
        ("APOLOGY_AUDIO", Path("/tmp/x.ulaw"), "/tmp/x.ulaw"),
        ("APOLOGY_AUDIO", None, None),
        ("VALIDATE_TWILIO_SIGNATURE", 0, False),
        ("TURN_DETECTION", None, None),
    ],
)
def test_values_are_read_as_their_declared_type(name: str, given: Any, read: Any) -> None:
    with override_settings(VOICECONV={name: given}):
        value = getattr(voiceconv_settings, name)
    assert value == read and type(value) is type(read)


@pytest.mark.parametrize(
    ("name", "given"),
    [
        ("CONNECT_TIMEOUT", "soon"),
        ("CONNECT_TIMEOUT", True),
        ("CONNECT_TIMEOUT", float("nan")),
        ("MAX_CALL_SECONDS", "inf"),
        ("MAX_CONCURRENT_CALLS", 2.5),
        ("VALIDATE_TWILIO_SIGNATURE", "no"),
        ("TURN_DETECTION", "server_vad"),
        ("MODEL", 5),
        ("ON_USER_MESSAGE", 5),
    ],
)
def test_a_value_of_the_wrong_type_is_a_configuration_error_naming_the_key(
    name: str, given: Any
) -> None:
    with override_settings(VOICECONV={name: given}), pytest.raises(
        ConfigurationError, match=rf"VOICECONV\['{name}'\] must be"
    ) as caught:
        getattr(voiceconv_settings, name)
    assert isinstance(caught.value, ImproperlyConfigured)


def test_limits_and_timeouts_are_typed_objects_built_once() -> None:
    overrides = {
        "MAX_CALL_SECONDS": 90,
        "CALL_END_WARNING_SECONDS": "15",
        "IDLE_REPROMPT_SECONDS": 7.5,
        "IDLE_HANGUP_SECONDS": 0,
        "EARLY_AUDIO_BUFFER_MS": 2000,
        "CONNECT_TIMEOUT": 4,
        "TOOL_TIMEOUT": 3,
    }
    with override_settings(VOICECONV=overrides):
        limits = voiceconv_settings.limits
        assert limits == CallLimits(
            max_call_ms=90_000, end_warning_ms=15_000, idle_reprompt_ms=7_500,
            idle_hangup_ms=0, early_audio_ms=2000, dtmf_pause_ms=1000,
        )
        assert voiceconv_settings.limits is limits  # built once
        timeouts = voiceconv_settings.timeouts
        assert timeouts == Timeouts(
            connect=4.0, preconnect=20.0, hangup_grace=10.0, tool_holding=1.5, tool=3.0,
            stream_token_max_age=120.0, stream_start=5.0, start_database=5.0, control=5.0,
            drain=100.0, heartbeat=10.0, live=45.0,  # the longest call, then its goodbye
        )
        assert voiceconv_settings.timeouts is timeouts
    with override_settings(VOICECONV={"CONNECT_TIMEOUT": 1}):
        assert voiceconv_settings.timeouts.connect == 1.0  # rebuilt on setting_changed
        assert voiceconv_settings.limits.max_call_ms == 1_800_000


@pytest.mark.parametrize(("overrides", "drain"), [
    ({}, 1810.0),  # MAX_CALL_SECONDS 1800 + HANGUP_GRACE_SECONDS 10: every call ends itself
    ({"MAX_CALL_SECONDS": 600, "HANGUP_GRACE_SECONDS": 5}, 605.0),
    ({"MAX_CALL_SECONDS": 0}, float("inf")),  # no call limit: until the calls end
    ({"DRAIN_SECONDS": 0}, 0.0),  # stop at once
    ({"DRAIN_SECONDS": 45, "MAX_CALL_SECONDS": 0}, 45.0),
])
def test_the_drain_on_sigterm_lasts_as_long_as_a_call_may_unless_set(
    overrides: dict[str, Any], drain: float
) -> None:
    with override_settings(VOICECONV=overrides):
        assert voiceconv_settings.timeouts.drain == drain


def test_unknown_settings_are_attribute_errors() -> None:
    with pytest.raises(AttributeError, match="NOT_A_SETTING"):
        _ = voiceconv_settings.NOT_A_SETTING
