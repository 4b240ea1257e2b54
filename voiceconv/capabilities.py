"""What each Realtime model accepts in its session: the one table of model capabilities.

A session option a model does not accept makes the server refuse the whole ``session.update``
(``unknown_parameter``): the call cannot start. So the agent form, the system checks and the
session builder all ask this table first. Sources: the installed ``openai`` SDK's
``openai/types/realtime/`` (``parallel_tool_calls`` and ``reasoning`` "only supported by
reasoning Realtime models such as gpt-realtime-2"; ``AudioTranscriptionParam.delay`` "only
supported with gpt-realtime-whisper"; ``idle_timeout_ms`` "only supported for server_vad"),
and OpenAI's model pages for the gpt-realtime-2 family (reasoning, parallel tool calls,
retention-ratio truncation, custom voices), as of 2026-11.

A project running a model not listed here (a dated snapshot is matched by its family's name)
describes it with ``VOICECONV["MODEL_CAPABILITIES"]``::

    VOICECONV = {"MODEL_CAPABILITIES": {"gpt-realtime-3": {"reasoning": True,
                 "parallel_tool_calls": True, "retention_ratio": True, "custom_voices": True}}}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from voiceconv.conf import voiceconv_settings

#: ``reasoning.effort`` values (``RealtimeReasoningEffort``), fastest first.
REASONING_EFFORTS = ("minimal", "low", "medium", "high", "xhigh")
#: ``audio.input.transcription.delay`` values.
TRANSCRIPTION_DELAYS = ("minimal", "low", "medium", "high", "xhigh")
#: Transcription models that accept ``delay``.
DELAY_TRANSCRIPTION_MODELS = frozenset({"gpt-realtime-whisper"})
#: Semantic VAD ``eagerness`` values.
EAGERNESS = ("low", "medium", "high", "auto")
#: Built-in voices; any other voice is a custom one, ``{"id": "voice_…"}``.
BUILTIN_VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"}
)
CUSTOM_VOICE_PREFIX = "voice_"
#: ``max_output_tokens`` bounds (else ``"inf"``).
MAX_OUTPUT_TOKENS = 4096


@dataclass(frozen=True, slots=True)
class ModelCapabilities:
    """The session options one model accepts beyond the common GA ones."""

    reasoning: bool = False
    parallel_tool_calls: bool = False
    retention_ratio: bool = False
    custom_voices: bool = False


_REASONING_FAMILY = ModelCapabilities(
    reasoning=True, parallel_tool_calls=True, retention_ratio=True, custom_voices=True
)
_CLASSIC = ModelCapabilities()

#: By model name; the longest name that starts a model's name describes it.
MODELS: dict[str, ModelCapabilities] = {
    "gpt-realtime-2": _REASONING_FAMILY,
    "gpt-realtime-2.1": _REASONING_FAMILY,
    "gpt-realtime-2.1-mini": _REASONING_FAMILY,
    "gpt-realtime-1.5": _CLASSIC,
    "gpt-realtime": _CLASSIC,
    "gpt-realtime-mini": _CLASSIC,
    "gpt-4o-realtime-preview": _CLASSIC,
    "gpt-4o-mini-realtime-preview": _CLASSIC,
    "gpt-audio-1.5": _CLASSIC,
    "gpt-audio-mini": _CLASSIC,
}


def capabilities(model: str) -> ModelCapabilities:
    """What ``model`` accepts: ``MODEL_CAPABILITIES`` over :data:`MODELS`, by longest prefix.

    A model nobody describes accepts only the common options.
    """
    table: dict[str, ModelCapabilities] = dict(MODELS)
    user = voiceconv_settings.MODEL_CAPABILITIES
    known = {f.name for f in fields(ModelCapabilities)}
    for name, caps in (user or {}).items():
        if isinstance(caps, ModelCapabilities):
            table[str(name)] = caps
        elif isinstance(caps, Mapping):
            table[str(name)] = ModelCapabilities(
                **{k: bool(v) for k, v in caps.items() if k in known}
            )
    best = ""
    for name in table:
        if (model == name or model.startswith(name + "-")) and len(name) > len(best):
            best = name
    return table[best] if best else _CLASSIC


def voice_value(voice: Any) -> Any:
    """``audio.output.voice`` for a configured voice: a built-in name, or ``{"id": "voice_…"}``
    for a custom voice given by its id (or already as that object)."""
    if isinstance(voice, Mapping):
        return {"id": str(voice.get("id", ""))}
    text = str(voice)
    if text.startswith(CUSTOM_VOICE_PREFIX):
        return {"id": text}
    return text


def is_custom_voice(voice: Any) -> bool:
    return isinstance(voice_value(voice), dict)


def truncation_value(
    kind: str | None, ratio: float | None = None, post_instructions: int | None = None
) -> Any:
    """The GA ``truncation`` (``RealtimeTruncationParam``) for the admin's three fields."""
    if kind != "retention_ratio":
        return kind or None
    value: dict[str, Any] = {"type": "retention_ratio", "retention_ratio": float(ratio or 0)}
    if post_instructions:
        value["token_limits"] = {"post_instructions": int(post_instructions)}
    return value


#: A model that accepts every option (to tell bad values from options a model refuses).
EVERYTHING = ModelCapabilities(
    reasoning=True, parallel_tool_calls=True, retention_ratio=True, custom_voices=True
)


def option_problems(
    model: str, options: Mapping[str, Any], caps: ModelCapabilities | None = None
) -> dict[str, str]:
    """What is wrong with session ``options`` for ``model``: {option: why}, empty when fine.

    ``options`` uses the names of :func:`voiceconv.realtime.build_session_config`'s
    overrides, with effective values (``turn_detection_type`` and ``transcription_model``
    included so that dependent options can be judged); absent or ``None`` = not set.
    """
    caps = caps or capabilities(model)
    problems: dict[str, str] = {}

    def given(key: str) -> Any:
        return options.get(key)

    effort = given("reasoning_effort")
    if effort is not None:
        if effort not in REASONING_EFFORTS:
            problems["reasoning_effort"] = (
                f"{effort!r} is not a reasoning effort ({', '.join(REASONING_EFFORTS)})."
            )
        elif not caps.reasoning:
            problems["reasoning_effort"] = (
                f"{model} is not a reasoning model: it refuses reasoning options. Choose a "
                "gpt-realtime-2 family model, or leave reasoning effort blank."
            )
    for key in ("greeting_reasoning_effort",):
        value = given(key)
        if value is not None and not caps.reasoning:
            problems[key] = f"{model} is not a reasoning model: leave this blank."
    if given("parallel_tool_calls") is not None and not caps.parallel_tool_calls:
        problems["parallel_tool_calls"] = (
            f"{model} does not accept parallel_tool_calls (reasoning models only)."
        )
    truncation = given("truncation")
    if truncation is not None:
        if isinstance(truncation, Mapping):
            ratio = truncation.get("retention_ratio")
            if truncation.get("type") != "retention_ratio" or not isinstance(
                ratio, (int, float)
            ) or not 0 < float(ratio) <= 1:
                problems["truncation"] = "A retention ratio is a number above 0 and at most 1."
            elif not caps.retention_ratio:
                problems["truncation"] = (
                    f"{model} does not accept retention-ratio truncation; use auto or disabled."
                )
            limits = truncation.get("token_limits") or {}
            post = limits.get("post_instructions") if isinstance(limits, Mapping) else None
            if post is not None and (not isinstance(post, int) or post < 1):
                problems["truncation"] = "The post-instructions token limit is a positive number."
        elif truncation not in ("auto", "disabled"):
            problems["truncation"] = (
                'truncation is "auto", "disabled" or a retention ratio, '
                f"not {truncation!r}."
            )
    voice = given("voice")
    if voice is not None:
        value = voice_value(voice)
        if isinstance(value, dict):
            if not caps.custom_voices:
                problems["voice"] = f"{model} does not accept custom voices."
            elif len(value["id"]) <= len(CUSTOM_VOICE_PREFIX) or not value["id"].startswith(
                CUSTOM_VOICE_PREFIX
            ):
                problems["voice"] = 'A custom voice is given by its id, "voice_…".'
        elif value not in BUILTIN_VOICES:
            problems["voice"] = (
                f"{value!r} is neither a built-in voice ({', '.join(sorted(BUILTIN_VOICES))}) "
                'nor a custom voice id ("voice_…").'
            )
    delay = given("transcription_delay")
    if delay is not None:
        transcription_model = given("transcription_model")
        if delay not in TRANSCRIPTION_DELAYS:
            problems["transcription_delay"] = (
                f"{delay!r} is not a delay ({', '.join(TRANSCRIPTION_DELAYS)})."
            )
        elif transcription_model not in DELAY_TRANSCRIPTION_MODELS:
            problems["transcription_delay"] = (
                "Only gpt-realtime-whisper transcription accepts a delay "
                f"(transcription model: {transcription_model or 'off'})."
            )
    kind = given("turn_detection_type")
    idle = given("idle_timeout_ms")
    if idle is not None:
        if kind != "server_vad":
            problems["idle_timeout_ms"] = "The idle timeout works with server VAD only."
        elif not isinstance(idle, int) or idle < 1:
            problems["idle_timeout_ms"] = "The idle timeout is a positive number of ms."
    eagerness = given("eagerness")
    if eagerness is not None:
        if kind != "semantic_vad":
            problems["eagerness"] = "Eagerness works with semantic VAD only."
        elif eagerness not in EAGERNESS:
            problems["eagerness"] = f"Eagerness is one of {', '.join(EAGERNESS)}."
    tokens = given("max_output_tokens")
    if tokens is not None and tokens != "inf" and (
        not isinstance(tokens, int) or isinstance(tokens, bool)
        or not 1 <= tokens <= MAX_OUTPUT_TOKENS
    ):
        problems["max_output_tokens"] = f'max_output_tokens is 1-{MAX_OUTPUT_TOKENS} or "inf".'
    return problems
