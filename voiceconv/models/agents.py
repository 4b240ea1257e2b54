"""Agents: the operator-editable layer of the session configuration.

An :class:`Agent`'s blank fields fall back to the ``VOICECONV`` defaults;
``Agent.objects.for_number`` picks the agent that answers a number.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models, transaction
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from voiceconv.capabilities import option_problems, truncation_value
from voiceconv.checks import TURN_DETECTION_HINT, TURN_DETECTION_OFF
from voiceconv.conf import voiceconv_settings
from voiceconv.exceptions import InvalidPhoneNumberError
from voiceconv.phone import normalize_number, number_key

__all__ = ["Agent", "AgentManager"]

logger = logging.getLogger("voiceconv.agents")


# --- agents ------------------------------------------------------------------------------------

class AgentManager(models.Manager["Agent"]):
    """Adds :meth:`for_number`."""

    def for_number(self, to: str) -> Agent | None:
        """The enabled agent answering ``to``, else the enabled default agent, else ``None``."""
        wanted = number_key(to)
        agent: Agent | None
        if wanted:
            for agent in self.filter(enabled=True).exclude(phone_numbers="").order_by("pk"):
                if wanted in agent.number_list():
                    return agent
        agent = self.filter(enabled=True, is_default=True).order_by("pk").first()
        if agent is None:
            logger.warning(
                "no agent answers %s and there is no enabled default agent: the call runs on "
                "the VOICECONV defaults with no tools. Create an agent in the admin (Agents) "
                "and mark it as the default; migrate creates one when there is no agent at all.",
                to or "an unknown number",
            )
        return agent


class Agent(models.Model):
    """A configured phone agent. Blank/null fields use the ``VOICECONV`` default."""

    class Backend(models.TextChoices):
        REALTIME = "realtime", _("OpenAI Realtime")
        GPT_LIVE = "gpt-live", _("GPT-Live")

    class TurnDetection(models.TextChoices):
        SERVER_VAD = "server_vad", _("Server VAD (silence based)")
        SEMANTIC_VAD = "semantic_vad", _("Semantic VAD (meaning based)")
        NONE = "none", _("Off (no automatic turns)")

    class Eagerness(models.TextChoices):
        LOW = "low", _("low (waits up to 8 s)")
        MEDIUM = "medium", _("medium (4 s)")
        HIGH = "high", _("high (2 s)")
        AUTO = "auto", _("auto")

    class NoiseReduction(models.TextChoices):
        NEAR_FIELD = "near_field", _("near field (handset, headset)")
        FAR_FIELD = "far_field", _("far field (speakerphone)")
        OFF = "off", _("off")

    class ReasoningEffort(models.TextChoices):
        MINIMAL = "minimal", _("minimal")
        LOW = "low", _("low")
        MEDIUM = "medium", _("medium")
        HIGH = "high", _("high")
        XHIGH = "xhigh", _("extra high")

    class Truncation(models.TextChoices):
        AUTO = "auto", _("auto (drop the oldest turns when the context is full)")
        DISABLED = "disabled", _("disabled (an error instead)")
        RETENTION_RATIO = "retention_ratio", _("retention ratio (keeps prompt-cache hits)")

    name = models.CharField(_("name"), max_length=100)
    slug = models.SlugField(_("slug"), max_length=100, unique=True)
    is_default = models.BooleanField(
        _("default agent"), default=False, help_text=_("Answers numbers no other agent lists.")
    )
    enabled = models.BooleanField(_("enabled"), default=True)
    phone_numbers = models.TextField(
        _("phone numbers"), blank=True, help_text=_("One E.164 number per line (+14155550100).")
    )

    backend = models.CharField(
        _("speech backend"), max_length=20, choices=Backend.choices, default=Backend.REALTIME,
        help_text=_("Realtime: turn detection, transcription and token billing set here. "
                    "GPT-Live: the model takes turns itself, billed by the second."),
    )
    preconnect = models.BooleanField(
        _("pre-connect while ringing"), default=False,
        help_text=_("Open the OpenAI session and send its configuration as soon as the call's "
                    "webhook arrives, so the greeting can start the moment the stream "
                    "connects. A session whose stream never comes is closed after "
                    "VOICECONV PRECONNECT_TIMEOUT seconds (it may be billed meanwhile)."),
    )
    model = models.CharField(_("model"), max_length=100, blank=True)
    voice = models.CharField(
        _("voice"), max_length=100, blank=True,
        help_text=_('A built-in voice (marin, cedar, …) or a custom voice id, "voice_…".'),
    )
    live_delegation_model = models.CharField(
        _("tool model (GPT-Live)"), max_length=100, blank=True,
        help_text=_("GPT-Live only: the Responses model the session delegates tool calls to "
                    "(blank = VOICECONV GPT_LIVE_DELEGATION_MODEL)."),
    )
    live_acknowledgement_delay_ms = models.PositiveIntegerField(
        _("acknowledgement delay (ms, GPT-Live)"), null=True, blank=True,
        validators=[MaxValueValidator(10000)],
        help_text=_("GPT-Live only: wait this long before the model says it is working on a "
                    "tool call (blank = the service default)."),
    )
    opening_clip = models.CharField(
        _("opening clip (GPT-Live)"), max_length=100, blank=True,
        help_text=_("GPT-Live only: a recorded clip (a name from VOICECONV CLIPS) played word "
                    "for word as the call connects, before the greeting; the caller cannot "
                    "talk over it."),
    )
    instructions = models.TextField(_("instructions"), blank=True)
    greeting = models.TextField(
        _("greeting"),
        blank=True,
        help_text=_("What the agent is asked to say when the call connects."),
    )

    turn_detection_type = models.CharField(
        _("turn detection"), max_length=20, blank=True, choices=TurnDetection.choices
    )
    vad_threshold = models.FloatField(
        _("VAD threshold"),
        null=True,
        blank=True,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text=_("Server VAD: 0-1; raise it on noisy lines."),
    )
    vad_prefix_padding_ms = models.PositiveIntegerField(
        _("prefix padding (ms)"), null=True, blank=True
    )
    vad_silence_duration_ms = models.PositiveIntegerField(
        _("silence duration (ms)"), null=True, blank=True
    )
    vad_idle_timeout_ms = models.PositiveIntegerField(
        _("idle timeout (ms)"),
        null=True,
        blank=True,
        help_text=_("Server VAD: prompt a silent caller after this long."),
    )
    vad_eagerness = models.CharField(
        _("eagerness"), max_length=10, blank=True, choices=Eagerness.choices,
        help_text=_("Semantic VAD only."),
    )
    vad_create_response = models.BooleanField(_("create response"), null=True, blank=True)
    vad_interrupt_response = models.BooleanField(_("interrupt response"), null=True, blank=True)

    transcription_model = models.CharField(
        _("transcription model"), max_length=100, blank=True,
        help_text=_('Caller transcription model; "off" disables caller transcription.'),
    )
    transcription_language = models.CharField(
        _("transcription language"), max_length=20, blank=True,
        help_text=_("ISO-639-1 hint, e.g. en."),
    )
    transcription_prompt = models.TextField(
        _("transcription prompt"), blank=True, help_text=_("Vocabulary hints for transcription.")
    )
    transcription_delay = models.CharField(
        _("transcription delay"), max_length=10, blank=True, choices=ReasoningEffort.choices,
        help_text=_("gpt-realtime-whisper only: longer waits transcribe more accurately."),
    )
    noise_reduction = models.CharField(
        _("noise reduction"), max_length=20, blank=True, choices=NoiseReduction.choices
    )
    speed = models.FloatField(
        _("speed"), null=True, blank=True,
        validators=[MinValueValidator(0.25), MaxValueValidator(1.5)],
    )
    reasoning_effort = models.CharField(
        _("reasoning effort"), max_length=10, blank=True, choices=ReasoningEffort.choices,
        help_text=_("Reasoning models only; low or minimal keep phone answers quick."),
    )
    greeting_reasoning_effort = models.CharField(
        _("greeting reasoning effort"), max_length=10, blank=True,
        choices=ReasoningEffort.choices,
        help_text=_("The greeting's response alone; minimal gets the first words out soonest."),
    )
    parallel_tool_calls = models.BooleanField(
        _("parallel tool calls"), null=True, blank=True,
        help_text=_("Reasoning models only: may the model call several tools at once."),
    )
    truncation = models.CharField(
        _("truncation"), max_length=20, blank=True, choices=Truncation.choices,
        help_text=_("What happens when a long call fills the model's context."),
    )
    truncation_retention_ratio = models.FloatField(
        _("retention ratio"), null=True, blank=True,
        validators=[MinValueValidator(0.01), MaxValueValidator(1.0)],
        help_text=_("Retention ratio: the share of the conversation kept, e.g. 0.8."),
    )
    truncation_post_instructions_tokens = models.PositiveIntegerField(
        _("token limit after instructions"), null=True, blank=True,
        validators=[MinValueValidator(1)],
        help_text=_("Retention ratio: truncate once the conversation passes this many tokens."),
    )
    max_output_tokens = models.PositiveIntegerField(
        _("max output tokens"), null=True, blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(4096)],
        help_text=_("1-4096 per response; blank = the VOICECONV default."),
    )
    session_extra = models.JSONField(
        _("extra session keys"), default=dict, blank=True,
        help_text=_("Merged into the session object last, over VOICECONV SESSION_EXTRA."),
    )

    tools = models.ManyToManyField(
        "voiceconv.ToolDefinition", blank=True, related_name="agents", verbose_name=_("tools")
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    objects = AgentManager()

    class Meta:
        verbose_name = _("agent")
        verbose_name_plural = _("agents")
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"],
                condition=Q(is_default=True),
                name="voiceconv_agent_single_default",
            )
        ]

    def __str__(self) -> str:
        return self.name

    def number_list(self) -> list[str]:
        """The numbers this agent answers, in E.164 form (:func:`voiceconv.phone.number_key`)."""
        numbers = (number_key(line) for line in self.phone_numbers.splitlines())
        return [n for n in numbers if n]

    def clean(self) -> None:
        super().clean()
        numbers: list[str] = []
        for line in self.phone_numbers.splitlines():
            if line.strip():
                try:
                    numbers.append(normalize_number(line))
                except InvalidPhoneNumberError as exc:
                    raise ValidationError({"phone_numbers": str(exc)}) from exc
        self.phone_numbers = "\n".join(numbers)
        if self.is_default:
            others = Agent.objects.filter(is_default=True).exclude(pk=self.pk)
            if others.exists():
                raise ValidationError(
                    {"is_default": _("%(name)s is already the default agent.")
                     % {"name": others.first()}}
                )
        if self.session_extra is not None and not isinstance(self.session_extra, dict):
            raise ValidationError({"session_extra": _("Must be a JSON object.")})
        if self.turn_detection_type == self.TurnDetection.NONE:
            raise ValidationError(
                {"turn_detection_type": f"{TURN_DETECTION_OFF} {TURN_DETECTION_HINT}"}
            )
        errors = self.session_option_errors()
        if errors:
            raise ValidationError(errors)

    #: Agent fields by the option names of :func:`voiceconv.capabilities.option_problems`.
    OPTION_FIELDS = {
        "reasoning_effort": "reasoning_effort",
        "greeting_reasoning_effort": "greeting_reasoning_effort",
        "parallel_tool_calls": "parallel_tool_calls",
        "truncation": "truncation",
        "voice": "voice",
        "transcription_delay": "transcription_delay",
        "idle_timeout_ms": "vad_idle_timeout_ms",
        "eagerness": "vad_eagerness",
        "max_output_tokens": "max_output_tokens",
    }

    def session_option_errors(self) -> dict[str, str]:
        """This agent's session options that its model (or VAD, or transcription model)
        does not accept, by field name; judged with the ``VOICECONV`` defaults it inherits."""
        s = voiceconv_settings
        errors: dict[str, str] = {}
        if self.truncation == self.Truncation.RETENTION_RATIO:
            if self.truncation_retention_ratio is None:
                errors["truncation_retention_ratio"] = str(
                    _("Retention-ratio truncation needs its ratio.")
                )
        else:
            for name in ("truncation_retention_ratio", "truncation_post_instructions_tokens"):
                if getattr(self, name) is not None:
                    errors[name] = str(_("Only for retention-ratio truncation."))
        base_td = s.TURN_DETECTION if isinstance(s.TURN_DETECTION, dict) else {}
        transcription_model = self.transcription_model or s.TRANSCRIPTION_MODEL or None
        if transcription_model and transcription_model.lower() in {"off", "none"}:
            transcription_model = None
        options: dict[str, Any] = {
            "turn_detection_type": self.turn_detection_type or base_td.get("type"),
            "transcription_model": transcription_model,
            "reasoning_effort": self.reasoning_effort or None,
            "greeting_reasoning_effort": self.greeting_reasoning_effort or None,
            "parallel_tool_calls": self.parallel_tool_calls,
            "voice": self.voice or None,
            "transcription_delay": self.transcription_delay or None,
            "idle_timeout_ms": self.vad_idle_timeout_ms,
            "eagerness": self.vad_eagerness or None,
            "max_output_tokens": self.max_output_tokens,
        }
        if self.truncation and "truncation_retention_ratio" not in errors:
            options["truncation"] = self.truncation_config()
        problems = option_problems(self.model or s.MODEL, options)
        for option, problem in problems.items():
            errors.setdefault(self.OPTION_FIELDS[option], problem)
        return errors

    def truncation_config(self) -> Any:
        """The GA ``truncation`` this agent sets, or None."""
        return truncation_value(
            self.truncation or None,
            self.truncation_retention_ratio,
            self.truncation_post_instructions_tokens,
        )

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Save; making this agent the default takes the flag from any other agent."""
        with transaction.atomic(using=kwargs.get("using")):
            if self.is_default:
                Agent.objects.filter(is_default=True).exclude(pk=self.pk).update(
                    is_default=False
                )
            super().save(*args, **kwargs)

    # -- session config --------------------------------------------------------------------

    def _vad_overrides(self) -> dict[str, Any]:
        return {
            key: value
            for key, value in (
                ("threshold", self.vad_threshold),
                ("prefix_padding_ms", self.vad_prefix_padding_ms),
                ("silence_duration_ms", self.vad_silence_duration_ms),
                ("idle_timeout_ms", self.vad_idle_timeout_ms),
                ("eagerness", self.vad_eagerness or None),
                ("create_response", self.vad_create_response),
                ("interrupt_response", self.vad_interrupt_response),
            )
            if value is not None
        }

    def turn_detection(self) -> dict[str, Any] | bool | None:
        """The GA ``audio.input.turn_detection`` for this agent.

        ``True`` means "not overridden" (use the setting), ``None`` means VAD off, a dict is
        the complete GA object: the ``VOICECONV`` one (when of the same type) with this agent's
        fields on top, keeping only keys valid for the type.
        """
        overrides = self._vad_overrides()
        if self.turn_detection_type == self.TurnDetection.NONE:
            return None
        if not self.turn_detection_type and not overrides:
            return True
        base = voiceconv_settings.TURN_DETECTION
        base = dict(base) if isinstance(base, dict) else {}
        kind = self.turn_detection_type or base.get("type") or "server_vad"
        if base.get("type") != kind:
            base = {}
        allowed = {"type", "create_response", "interrupt_response"}
        if kind == "server_vad":
            allowed |= {"threshold", "prefix_padding_ms", "silence_duration_ms", "idle_timeout_ms"}
        else:
            allowed |= {"eagerness"}
        merged = {**base, **overrides, "type": kind}
        return {key: value for key, value in merged.items() if key in allowed}

    def live_overrides(self) -> dict[str, Any]:
        """The overrides mapping for :func:`voiceconv.gpt_live.build_live_session`."""
        out: dict[str, Any] = {}
        for key in ("model", "voice", "instructions", "greeting"):
            value = getattr(self, key)
            if value:
                out[key] = value
        if self.live_delegation_model:
            out["delegation_model"] = self.live_delegation_model
        if self.live_acknowledgement_delay_ms is not None:
            out["acknowledgement_delay_ms"] = self.live_acknowledgement_delay_ms
        return out

    def session_overrides(self) -> dict[str, Any]:
        """The overrides mapping for :func:`voiceconv.realtime.build_session_config`.

        Only the keys this agent sets are present (absent = the ``VOICECONV`` default).
        ``turn_detection`` is a complete GA dict when the agent overrides any VAD field.
        Because ``None`` means "use the default", an option the agent switches *off* (VAD,
        caller transcription, noise reduction) is ``False``. ``transcription_prompt`` is
        included when set.
        """
        out: dict[str, Any] = {}
        for key in ("model", "voice", "instructions", "greeting", "transcription_language"):
            value = getattr(self, key)
            if value:
                out[key] = value
        if self.transcription_model:
            # "off" switches caller transcription off.
            out["transcription_model"] = (
                False if self.transcription_model.lower() in {"off", "none"}
                else self.transcription_model
            )
        if self.transcription_prompt:
            out["transcription_prompt"] = self.transcription_prompt
        if self.noise_reduction:
            out["noise_reduction"] = (
                False if self.noise_reduction == self.NoiseReduction.OFF else self.noise_reduction
            )
        td = self.turn_detection()
        if td is not True:
            out["turn_detection"] = False if td is None else td
        if self.speed is not None:
            out["speed"] = self.speed
        if self.reasoning_effort:
            out["reasoning_effort"] = self.reasoning_effort
        if self.greeting_reasoning_effort:
            out["greeting_reasoning_effort"] = self.greeting_reasoning_effort
        if self.parallel_tool_calls is not None:
            out["parallel_tool_calls"] = self.parallel_tool_calls
        if self.truncation:
            out["truncation"] = self.truncation_config()
        if self.transcription_delay:
            out["transcription_delay"] = self.transcription_delay
        if self.max_output_tokens is not None:
            out["max_output_tokens"] = self.max_output_tokens
        if self.session_extra:
            out["session_extra"] = dict(self.session_extra)
        return out
