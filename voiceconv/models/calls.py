"""Agents, calls and their transcripts.

An :class:`Agent` is the operator-editable layer of the session configuration (blank fields
fall back to the ``VOICECONV`` defaults). A :class:`Call` records one phone call from webhook
to hang-up; its :class:`TranscriptEntry` rows are the conversation, in order, including what
the caller actually heard of an interrupted assistant turn.
"""

from __future__ import annotations

import logging
import statistics
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models, transaction
from django.db.models import F, Max, Min, Q
from django.utils.translation import gettext_lazy as _

from voiceconv.conf import voiceconv_settings
from voiceconv.events import CallInfo, our_number
from voiceconv.exceptions import InvalidPhoneNumberError
from voiceconv.phone import normalize_number, number_key

# Prices live in voiceconv.pricing (one dated table); re-exported here for older imports.
from voiceconv.pricing import DEFAULT_PRICES, estimate_cost, prices_for

logger = logging.getLogger("voiceconv.agents")

__all__ = ["DEFAULT_PRICES", "Agent", "Call", "TranscriptEntry", "estimate_cost", "prices_for"]


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

    model = models.CharField(_("model"), max_length=100, blank=True)
    voice = models.CharField(
        _("voice"), max_length=100, blank=True,
        help_text=_('A built-in voice (marin, cedar, …) or a custom voice id, "voice_…".'),
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
            from voiceconv.checks import TURN_DETECTION_HINT, TURN_DETECTION_OFF

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
        from voiceconv.capabilities import option_problems

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
        from voiceconv.capabilities import truncation_value

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


# --- calls -------------------------------------------------------------------------------------


class CallManager(models.Manager["Call"]):
    """The database work of the webhooks and the stream start: :meth:`record_webhook`,
    :meth:`record_status`, :meth:`claim_stream`."""

    def record_webhook(
        self,
        call_sid: str,
        *,
        account_sid: str = "",
        from_number: str = "",
        to_number: str = "",
        direction: str = "",
        status: str = "",
    ) -> tuple[Call, Agent | None]:
        """The incoming-call webhook: pick the agent for our number (:func:`our_number`:
        the number called for inbound calls, the one we call from for outbound ones) and
        record the call.

        Returns the row and the agent (``None``: the default configuration).
        """
        from django.utils import timezone

        agent = Agent.objects.for_number(our_number(direction, from_number, to_number))
        call, _created = self.update_or_create(
            twilio_call_sid=call_sid,
            defaults={
                "twilio_account_sid": account_sid,
                "agent": agent,
                "direction": direction,
                "from_number": from_number,
                "to_number": to_number,
                "status": status or Call.Status.RINGING,
                "webhook_received_at": timezone.now(),
            },
        )
        return call, agent

    def record_status(
        self,
        call_sid: str,
        *,
        status: str = "",
        duration: float | None = None,
        account_sid: str = "",
        from_number: str = "",
        to_number: str = "",
        direction: str = "",
    ) -> tuple[Call, bool]:
        """Twilio's status callback: its status and duration replace ours.

        A callback for a call never seen creates the row, so every billed call is on record.
        Returns the row (as updated) and whether it was created.
        """
        from django.utils import timezone

        call, created = self.get_or_create(
            twilio_call_sid=call_sid,
            defaults={
                "twilio_account_sid": account_sid,
                "from_number": from_number,
                "to_number": to_number,
                "direction": direction,
            },
        )
        updates: dict[str, Any] = {}
        if status:
            updates["status"] = status
        if duration is not None:
            updates["duration_seconds"] = duration
        if status in Call.FINAL_STATUSES and call.ended_at is None:
            updates["ended_at"] = timezone.now()
        if updates:
            updates["updated_at"] = timezone.now()
            self.filter(pk=call.pk).update(**updates)
            for name, value in updates.items():
                setattr(call, name, value)
        return call, created

    def claim_stream(self, info: CallInfo) -> tuple[Call, Agent | None] | str:
        """Claim the call ``info`` describes for its media stream (sync; at stream start).

        Creates the row when the webhook did not, picks the agent (an enabled ``agent`` custom
        parameter, else the call's, else the one answering our number: :func:`our_number`),
        and sets ``twilio_stream_sid`` only where it is empty. Returns the call and its agent,
        or the reason to refuse the stream (another stream has the call).
        """
        from django.utils import timezone

        call = self.filter(twilio_call_sid=info.call_sid).select_related("agent").first()
        if call is None:
            call = self.create(
                twilio_call_sid=info.call_sid,
                twilio_account_sid=info.account_sid,
                agent=Agent.objects.for_number(
                    our_number(info.direction, info.from_number, info.to_number)
                ),
                direction=info.direction,
                from_number=info.from_number,
                to_number=info.to_number,
                status="in-progress",
            )
        claimed = self.filter(pk=call.pk, twilio_stream_sid="").update(
            twilio_stream_sid=info.stream_sid,
            stream_started_at=timezone.now(),
            status="in-progress",
            custom_parameters=info.custom_parameters,
        )
        if not claimed:
            return f"call already has stream {call.twilio_stream_sid}"
        agent = call.agent
        agent_pk = info.custom_parameters.get("agent", "")
        if agent_pk.isdigit():
            agent = Agent.objects.filter(pk=int(agent_pk), enabled=True).first() or agent
        return call, agent


class Call(models.Model):
    """One phone call: who, which agent, when, how it ended, what it cost."""

    class Status(models.TextChoices):
        RINGING = "ringing", _("ringing")
        IN_PROGRESS = "in-progress", _("in progress")
        COMPLETED = "completed", _("completed")
        FAILED = "failed", _("failed")
        BUSY = "busy", _("busy")
        NO_ANSWER = "no-answer", _("no answer")
        CANCELED = "canceled", _("canceled")

    class EndReason(models.TextChoices):
        CALLER_HUNG_UP = "caller_hung_up", _("caller hung up")
        AGENT_ENDED = "agent_ended", _("agent ended the call")
        TRANSFERRED = "transferred", _("transferred")
        OPENAI_ERROR = "openai_error", _("OpenAI error")
        ERROR = "error", _("error")
        LIMIT = "limit", _("limit reached")
        SHUTDOWN = "shutdown", _("server shutdown")
        OPERATOR = "operator", _("ended by an operator")
        LOST = "lost", _("server process lost")

    class Direction(models.TextChoices):
        """Twilio's call directions, and ``browser`` for calls from the admin's softphone."""

        INBOUND = "inbound", _("inbound")
        OUTBOUND_API = "outbound-api", _("outbound (API)")
        OUTBOUND_DIAL = "outbound-dial", _("outbound (dial)")
        BROWSER = "browser", _("browser softphone")

    #: Twilio's final call statuses (no status follows them).
    FINAL_STATUSES = frozenset({"completed", "failed", "busy", "no-answer", "canceled"})

    objects = CallManager()

    twilio_call_sid = models.CharField(_("call SID"), max_length=64, unique=True)
    twilio_stream_sid = models.CharField(_("stream SID"), max_length=64, blank=True, db_index=True)
    twilio_account_sid = models.CharField(_("account SID"), max_length=64, blank=True)
    agent = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="calls",
        verbose_name=_("agent"),
    )
    model = models.CharField(
        _("model"), max_length=100, blank=True, help_text=_("Realtime model used (for pricing).")
    )
    direction = models.CharField(
        _("direction"), max_length=32, blank=True, choices=Direction.choices
    )
    from_number = models.CharField(_("from"), max_length=128, blank=True, db_index=True)
    to_number = models.CharField(_("to"), max_length=128, blank=True, db_index=True)
    custom_parameters = models.JSONField(_("custom parameters"), default=dict, blank=True)
    status = models.CharField(
        _("status"), max_length=20, choices=Status.choices, default=Status.RINGING, db_index=True
    )
    end_reason = models.CharField(_("end reason"), max_length=32, blank=True)
    error = models.TextField(_("error"), blank=True)
    traceback = models.TextField(_("traceback"), blank=True)

    webhook_received_at = models.DateTimeField(_("webhook received"), null=True, blank=True)
    stream_started_at = models.DateTimeField(_("stream started"), null=True, blank=True)
    session_ready_at = models.DateTimeField(_("OpenAI session ready"), null=True, blank=True)
    first_audio_at = models.DateTimeField(_("first assistant audio"), null=True, blank=True)
    first_audio_heard_at = models.DateTimeField(
        _("first audio heard"), null=True, blank=True,
        help_text=_("Twilio's first mark echo: the caller has heard the first audio."),
    )
    ended_at = models.DateTimeField(_("ended"), null=True, blank=True)
    duration_seconds = models.FloatField(_("duration (s)"), null=True, blank=True)

    responses = models.PositiveIntegerField(_("responses"), default=0)
    input_tokens = models.PositiveIntegerField(_("input tokens"), default=0)
    output_tokens = models.PositiveIntegerField(_("output tokens"), default=0)
    input_text_tokens = models.PositiveIntegerField(_("input text tokens"), default=0)
    input_audio_tokens = models.PositiveIntegerField(_("input audio tokens"), default=0)
    input_cached_tokens = models.PositiveIntegerField(_("cached input tokens"), default=0)
    input_image_tokens = models.PositiveIntegerField(_("input image tokens"), default=0)
    input_cached_text_tokens = models.PositiveIntegerField(
        _("cached input text tokens"), default=0)
    input_cached_audio_tokens = models.PositiveIntegerField(
        _("cached input audio tokens"), default=0)
    input_cached_image_tokens = models.PositiveIntegerField(
        _("cached input image tokens"), default=0)
    output_text_tokens = models.PositiveIntegerField(_("output text tokens"), default=0)
    output_audio_tokens = models.PositiveIntegerField(_("output audio tokens"), default=0)
    estimated_cost = models.DecimalField(
        _("estimated cost (USD)"), max_digits=12, decimal_places=6, default=Decimal(0)
    )
    answered_by = models.CharField(
        _("answered by"), max_length=32, blank=True,
        help_text=_("Twilio's answering-machine verdict (human, machine_start, fax, ...)."),
    )
    machine_detection_ms = models.PositiveIntegerField(
        _("machine detection (ms)"), null=True, blank=True
    )

    #: Which server process holds the live call ("host:pid"), and when it last said so
    #: (``voiceconv.live``): a call whose heartbeat stops is marked ended after a timeout.
    live_process = models.CharField(_("server process"), max_length=128, blank=True)
    heartbeat_at = models.DateTimeField(_("last heartbeat"), null=True, blank=True)

    created_at = models.DateTimeField(_("created"), auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("call")
        verbose_name_plural = _("calls")
        ordering = ["-created_at"]
        permissions = [
            ("control_call", _("Can control live calls")),
            ("place_browser_call", _("Can call agents from the browser softphone")),
        ]
        indexes = [
            models.Index(
                fields=["heartbeat_at"],
                condition=Q(ended_at__isnull=True),
                name="voiceconv_call_live",
            )
        ]

    def __str__(self) -> str:
        parties = " → ".join(p for p in (self.from_number, self.to_number) if p)
        return f"{self.twilio_call_sid} ({parties})" if parties else self.twilio_call_sid

    USAGE_FIELDS = (
        "input_tokens",
        "output_tokens",
        "input_text_tokens",
        "input_audio_tokens",
        "input_cached_tokens",
        "input_image_tokens",
        "input_cached_text_tokens",
        "input_cached_audio_tokens",
        "input_cached_image_tokens",
        "output_text_tokens",
        "output_audio_tokens",
    )

    @property
    def started_at(self) -> Any:
        """When the call began as far as we know (stream start, webhook, or row creation)."""
        return self.stream_started_at or self.webhook_received_at or self.created_at

    @property
    def pricing_model(self) -> str:
        """The model whose prices apply: this call's, its agent's, else ``VOICECONV`` MODEL."""
        if self.model:
            return self.model
        if self.agent_id and self.agent and self.agent.model:
            return self.agent.model
        return str(voiceconv_settings.MODEL)

    def add_usage(self, usage: Any) -> None:
        """Add one ``response.done``'s :class:`~voiceconv.events.Usage` (in memory)."""
        for field in self.USAGE_FIELDS:
            setattr(self, field, getattr(self, field) + max(int(getattr(usage, field, 0) or 0), 0))
        self.responses += 1
        self.estimated_cost = self.compute_cost()

    def compute_cost(self) -> Decimal:
        """Estimated USD cost of the usage accumulated so far."""
        return estimate_cost(
            self.pricing_model,
            **{f: getattr(self, f) for f in self.USAGE_FIELDS
               if f not in ("input_tokens", "output_tokens")},
        )

    #: The call's start, step by step: (name, field), in order.
    MILESTONES = (
        ("webhook_received", "webhook_received_at"),
        ("stream_started", "stream_started_at"),
        ("session_ready", "session_ready_at"),
        ("first_audio_sent", "first_audio_at"),
        ("first_audio_heard", "first_audio_heard_at"),
    )

    def start_timings(self) -> dict[str, int | None]:
        """Milliseconds from the webhook (else the stream start) to each step of the start;
        None for a step not reached (or not recorded)."""
        origin = self.webhook_received_at or self.stream_started_at
        out: dict[str, int | None] = {}
        for name, field in self.MILESTONES:
            value = getattr(self, field)
            out[name] = (
                None if value is None or origin is None
                else round((value - origin).total_seconds() * 1000)
            )
        return out

    @property
    def cost_per_minute(self) -> Decimal | None:
        """Estimated USD cost per minute of this call (None without a duration)."""
        from voiceconv.pricing import cost_per_minute

        return cost_per_minute(self.estimated_cost, self.duration_seconds)

    @property
    def turn_count(self) -> int:
        """Caller and assistant turns (uses a ``turns`` annotation when present)."""
        annotated = getattr(self, "turns", None)
        if annotated is not None:
            return int(annotated)
        return self.transcript_entries.filter(
            role__in=[TranscriptEntry.Role.CALLER, TranscriptEntry.Role.ASSISTANT]
        ).count()

    @property
    def response_latencies(self) -> list[int]:
        """Assistant response latencies in ms, in call order (prefetch-aware)."""
        prefetched = getattr(self, "assistant_latencies", None)
        if prefetched is not None:
            return [e.latency_ms for e in prefetched if e.latency_ms is not None]
        latencies = self.transcript_entries.filter(
            role=TranscriptEntry.Role.ASSISTANT, latency_ms__isnull=False
        ).values_list("latency_ms", flat=True)
        return [n for n in latencies if n is not None]

    @property
    def median_latency_ms(self) -> float | None:
        """Median assistant response latency in ms, or ``None`` without measured turns."""
        values = self.response_latencies
        return statistics.median(values) if values else None


#: Added to ``sequence`` while entries make room for an earlier one (two updates rather than
#: one, so the unique ``(call, sequence)`` constraint holds after each row on every database).
_SEQUENCE_SHIFT = 1_000_000


class TranscriptEntryManager(models.Manager["TranscriptEntry"]):
    """Adds :meth:`add_in_order`."""

    def add_in_order(self, call: Call, **fields: Any) -> TranscriptEntry:
        """Save an entry of ``call`` at its place in the conversation, and return it.

        Entries are written in the order they *finish*: a caller's turn is transcribed after
        the answer to it has started, a tool's entry is written when it returns. ``sequence``
        is the order they *happened* in the call, by ``offset_ms`` (the caller's speech start,
        the tool's call, the assistant's first audio): the new entry goes before every entry
        that began later, and those move one place down. An entry without an offset goes last.
        ``write_sequence`` keeps the order of writing.

        Writers of one call are serialised (the call's row is locked); saving an entry with
        the ``openai_item_id`` of one already saved (a retried write) returns that entry.
        """
        offset = fields.get("offset_ms")
        item_id = fields.get("openai_item_id") or ""
        with transaction.atomic(using=self.db):
            list(Call.objects.using(self.db).select_for_update().filter(pk=call.pk).values("pk"))
            entries = self.filter(call=call)
            if item_id:
                existing = entries.filter(openai_item_id=item_id, role=fields.get("role")).first()
                if existing is not None:
                    return existing
            last = entries.aggregate(sequence=Max("sequence"), written=Max("write_sequence"))
            position = None
            if offset is not None:
                position = entries.filter(offset_ms__gt=offset).aggregate(m=Min("sequence"))["m"]
            if position is None:
                position = (last["sequence"] or 0) + 1
            else:
                entries.filter(sequence__gte=position).update(
                    sequence=F("sequence") + _SEQUENCE_SHIFT
                )
                entries.filter(sequence__gte=_SEQUENCE_SHIFT).update(
                    sequence=F("sequence") - (_SEQUENCE_SHIFT - 1)
                )
            return self.create(
                call=call,
                sequence=position,
                write_sequence=(last["written"] or 0) + 1,
                **fields,
            )


class TranscriptEntry(models.Model):
    """One turn of a call's conversation.

    ``sequence`` orders a call's entries as they happened (see
    :meth:`TranscriptEntryManager.add_in_order`); ``write_sequence`` as they were written.
    """

    class Role(models.TextChoices):
        CALLER = "caller", _("caller")
        ASSISTANT = "assistant", _("assistant")
        TOOL = "tool", _("tool")
        SYSTEM = "system", _("system")
        DTMF = "dtmf", _("DTMF")
        CONTROL = "control", _("control")

    call = models.ForeignKey(
        Call, on_delete=models.CASCADE, related_name="transcript_entries", verbose_name=_("call")
    )
    sequence = models.PositiveIntegerField(
        _("sequence"), help_text=_("Place in the conversation, by when the turn began.")
    )
    write_sequence = models.PositiveIntegerField(
        _("write sequence"), null=True, blank=True,
        help_text=_("Order in which the entry was written (turns finish out of order)."),
    )
    role = models.CharField(_("role"), max_length=16, choices=Role.choices)
    text = models.TextField(_("text"), blank=True)
    openai_item_id = models.CharField(_("Realtime item id"), max_length=64, blank=True)
    offset_ms = models.IntegerField(_("offset (ms)"), null=True, blank=True)
    latency_ms = models.IntegerField(_("response latency (ms)"), null=True, blank=True)
    interrupted = models.BooleanField(_("interrupted"), default=False)
    heard_ms = models.IntegerField(_("heard (ms)"), null=True, blank=True)
    total_ms = models.IntegerField(_("generated audio (ms)"), null=True, blank=True)
    heard_text = models.TextField(_("heard text"), blank=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    objects = TranscriptEntryManager()

    class Meta:
        verbose_name = _("transcript entry")
        verbose_name_plural = _("transcript entries")
        ordering = ["call", "sequence"]
        constraints = [
            models.UniqueConstraint(
                fields=["call", "sequence"], name="voiceconv_transcriptentry_call_sequence"
            )
        ]

    def __str__(self) -> str:
        return f"{self.sequence} {self.role}: {self.text[:60]}"

    @property
    def unheard_text(self) -> str:
        """For an interrupted turn, the tail of ``text`` the caller never heard."""
        if not self.interrupted:
            return ""
        if self.text.startswith(self.heard_text):
            return self.text[len(self.heard_text):]
        return ""

    @property
    def heard_part(self) -> str:
        """What the caller heard: the whole text, or the heard prefix when interrupted."""
        if not self.interrupted:
            return self.text
        return self.heard_text if self.text.startswith(self.heard_text) else self.text
