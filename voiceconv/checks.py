"""System checks for voiceconv (``voiceconv.E00x`` / ``voiceconv.W00x``).

| id | when |
| --- | --- |
| ``voiceconv.E001`` | ``VOICECONV`` is not a dict |
| ``voiceconv.E002`` | ``VOICECONV`` has a key voiceconv does not know |
| ``voiceconv.E003`` | ``TURN_DETECTION`` is off: nothing would ever end the caller's turn |
| ``voiceconv.W001`` | Twilio signature checks are off outside ``DEBUG`` |
| ``voiceconv.W002`` | signature checks on, ``TWILIO_AUTH_TOKEN`` empty (all webhooks get 403) |
| ``voiceconv.W003`` | the per-call stream token is not required outside ``DEBUG`` |
| ``voiceconv.W004`` | ``PUBLIC_URL`` is not an absolute ``http(s)://`` origin |
| ``voiceconv.E004`` | a session option setting has a value the Realtime API refuses |
| ``voiceconv.W006`` | a session option setting that ``MODEL`` does not accept (left out) |
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register

from voiceconv.capabilities import EVERYTHING, option_problems
from voiceconv.conf import DEFAULTS
from voiceconv.security import auth_token


def _user_settings() -> dict[str, Any] | None:
    user = getattr(settings, "VOICECONV", {}) or {}
    return user if isinstance(user, dict) else None


def _setting(user: dict[str, Any], name: str) -> Any:
    return user.get(name, DEFAULTS[name])


@register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``VOICECONV`` is a dict of known keys."""
    user = _user_settings()
    if user is None:
        return [Error("VOICECONV must be a dict.", id="voiceconv.E001")]
    errors: list[CheckMessage] = []
    for key in sorted(set(user) - set(DEFAULTS)):
        errors.append(
            Error(
                f"Unknown VOICECONV setting {key!r}.",
                hint="See the settings table in voiceconv's README.",
                id="voiceconv.E002",
            )
        )
    if "TURN_DETECTION" in user and not user["TURN_DETECTION"]:
        errors.append(Error(TURN_DETECTION_OFF, hint=TURN_DETECTION_HINT, id="voiceconv.E003"))
    errors.extend(_session_option_checks(user))
    return errors


def _session_option_checks(user: dict[str, Any]) -> list[CheckMessage]:
    """The session options of the settings, against what ``MODEL`` accepts."""
    td = _setting(user, "TURN_DETECTION")
    td = td if isinstance(td, dict) else {}
    options = {
        "turn_detection_type": td.get("type"),
        "transcription_model": _setting(user, "TRANSCRIPTION_MODEL") or None,
        "reasoning_effort": _setting(user, "REASONING_EFFORT"),
        "greeting_reasoning_effort": _setting(user, "GREETING_REASONING_EFFORT"),
        "parallel_tool_calls": _setting(user, "PARALLEL_TOOL_CALLS"),
        "truncation": _setting(user, "TRUNCATION"),
        "voice": _setting(user, "VOICE"),
        "transcription_delay": _setting(user, "TRANSCRIPTION_DELAY"),
        "idle_timeout_ms": td.get("idle_timeout_ms"),
        "eagerness": td.get("eagerness"),
        "max_output_tokens": _setting(user, "MAX_OUTPUT_TOKENS"),
    }
    model = str(_setting(user, "MODEL"))
    try:
        bad = option_problems(model, options, EVERYTHING)
        refused = option_problems(model, options)
    except Exception as exc:  # a settings value of a shape nothing expects
        return [Error(f"VOICECONV session options could not be checked: {exc}",
                      id="voiceconv.E004")]
    messages: list[CheckMessage] = [
        Error(f"VOICECONV session option {key}: {why}", id="voiceconv.E004")
        for key, why in sorted(bad.items())
    ]
    messages.extend(
        Warning(
            f"VOICECONV session option {key}: {why}",
            hint="It is left out of the sessions of MODEL; agents on a model that accepts "
                 "it still get it.",
            id="voiceconv.W006",
        )
        for key, why in sorted(refused.items()) if key not in bad
    )
    return messages


#: Why turn detection cannot be off (shared with the Agent form's validation).
TURN_DETECTION_OFF = (
    "Turn detection off is not supported: without server VAD nothing tells voiceconv when "
    "the caller has finished speaking, and the agent would never answer."
)
TURN_DETECTION_HINT = (
    "Use server_vad or semantic_vad; set create_response to False if the model should not "
    "answer by itself (voiceconv then asks for each answer once the caller's turn is committed)."
)


@register("security")
def check_security(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Who gets in: warn about configurations that let strangers open calls."""
    user = _user_settings()
    if user is None:
        return []  # reported by check_settings
    messages: list[CheckMessage] = []
    validate = bool(_setting(user, "VALIDATE_TWILIO_SIGNATURE"))
    if not validate and not settings.DEBUG:
        messages.append(
            Warning(
                "Twilio signature checks are off (VOICECONV['VALIDATE_TWILIO_SIGNATURE'] = "
                "False) while DEBUG is False: anyone can post to the webhooks and open streams.",
                hint="Remove the setting (checks are on by default) and set TWILIO_AUTH_TOKEN.",
                id="voiceconv.W001",
            )
        )
    if validate and not auth_token():
        messages.append(
            Warning(
                "TWILIO_AUTH_TOKEN is empty while Twilio signature checks are on: every "
                "webhook request will be refused with 403.",
                hint="Set settings.TWILIO_AUTH_TOKEN to your Twilio account's Auth Token.",
                id="voiceconv.W002",
            )
        )
    if not _setting(user, "REQUIRE_STREAM_TOKEN") and not settings.DEBUG:
        messages.append(
            Warning(
                "The per-call stream token is not required (VOICECONV['REQUIRE_STREAM_TOKEN'] "
                "= False) while DEBUG is False: a stream opened by anyone reaching the "
                "websocket opens an OpenAI session.",
                hint="Remove the setting (the token is required by default).",
                id="voiceconv.W003",
            )
        )
    public_url = str(_setting(user, "PUBLIC_URL") or "")
    if public_url:
        parts = urlsplit(public_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            messages.append(
                Warning(
                    f"VOICECONV['PUBLIC_URL'] = {public_url!r} is not an absolute http(s) URL; "
                    "Twilio signatures will not validate.",
                    hint='Use the origin Twilio calls, e.g. "https://voice.example.com".',
                    id="voiceconv.W004",
                )
            )
    return messages
