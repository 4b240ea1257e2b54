"""Telephony per agent and per call: outbound limits, answering machines, recordings.

:class:`AgentTelephony` is the admin-edited telephony layer of an :class:`Agent` (one row per
agent, created on demand; blank fields use the ``VOICECONV`` defaults). :class:`Recording`
is one Twilio recording of a call, as its status callback reported it.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.utils.translation import gettext_lazy as _

from voiceconv.conf import voiceconv_settings
from voiceconv.exceptions import InvalidPhoneNumberError
from voiceconv.models.calls import Agent, Call
from voiceconv.phone import transfer_target

_PREFIX_RE = re.compile(r"^(\+[0-9]{1,14}|sips?:\S*)\*$", re.IGNORECASE)


def allow_list_entry(text: str) -> str:
    """One transfer allow-list line, normalised: an E.164 number, a ``sip:`` URI, or a prefix
    (``+1415*``, ``sip:*@example.com`` is not one: only a trailing ``*``). Raises
    :class:`~voiceconv.exceptions.InvalidPhoneNumberError` otherwise."""
    entry = text.strip()
    if entry.endswith("*"):
        if _PREFIX_RE.match(entry):
            return entry
        raise InvalidPhoneNumberError(
            f"{text!r} is not a prefix: a + and digits, or sip:..., then *"
        )
    return transfer_target(entry)


class AgentTelephony(models.Model):
    """How an agent places calls, treats answering machines, records and transfers."""

    class OnMachine(models.TextChoices):
        HANG_UP = "hang_up", _("hang up")
        VOICEMAIL = "voicemail", _("wait for the beep, leave a voicemail, hang up")
        TALK = "talk", _("talk as to a person")

    class VoicemailMode(models.TextChoices):
        TEXT = "text", _("say the message word for word")
        PROMPT = "prompt", _("the model speaks from the message as a prompt")

    class GreetingWait(models.TextChoices):
        FIRST_WORDS = "first_words", _("wait for the callee's first words")
        AMD = "amd", _("wait for the answering-machine verdict")
        NONE = "none", _("greet at once")

    agent = models.OneToOneField(
        Agent, on_delete=models.CASCADE, related_name="telephony", verbose_name=_("agent")
    )
    caller_id = models.CharField(
        _("caller ID"), max_length=32, blank=True,
        help_text=_("E.164 number outbound calls come from; blank = the agent's first number, "
                    "else VOICECONV OUTBOUND_CALLER_ID."),
    )
    max_concurrent_outbound = models.PositiveIntegerField(
        _("concurrent outbound calls"), null=True, blank=True,
        help_text=_("Most outbound calls in progress at once; blank = VOICECONV "
                    "OUTBOUND_MAX_CONCURRENT."),
    )
    max_outbound_per_minute = models.PositiveIntegerField(
        _("outbound calls per minute"), null=True, blank=True,
        help_text=_("Most outbound calls placed in any 60 seconds; blank = VOICECONV "
                    "OUTBOUND_CALLS_PER_MINUTE."),
    )
    on_machine = models.CharField(
        _("on an answering machine"), max_length=16, choices=OnMachine.choices,
        default=OnMachine.HANG_UP,
    )
    voicemail_mode = models.CharField(
        _("voicemail message is"), max_length=16, choices=VoicemailMode.choices,
        default=VoicemailMode.TEXT,
    )
    voicemail_message = models.TextField(
        _("voicemail message"), blank=True,
        help_text=_("Left after the beep; blank = VOICECONV VOICEMAIL_MESSAGE."),
    )
    greeting_wait = models.CharField(
        _("outbound greeting waits for"), max_length=16, choices=GreetingWait.choices,
        default=GreetingWait.FIRST_WORDS,
        help_text=_("Outbound callees usually speak first."),
    )
    record_calls = models.BooleanField(
        _("record calls"), default=False,
        help_text=_("Record every call (both parties, dual channel) through Twilio."),
    )
    announce_recording = models.BooleanField(
        _("announce the recording"), default=True,
        help_text=_("Tell the caller the call is recorded (VOICECONV RECORDING_ANNOUNCEMENT)."),
    )
    transfer_targets = models.TextField(
        _("transfer targets"), blank=True,
        help_text=_("Numbers and SIP addresses the agent may transfer to or send digits "
                    "after, one per line; a line ending in * allows a prefix (+1415*). "
                    "Blank = VOICECONV TRANSFER_ALLOW_LIST."),
    )

    class Meta:
        verbose_name = _("telephony")
        verbose_name_plural = _("telephony")

    def __str__(self) -> str:
        return f"telephony of {self.agent}"

    @classmethod
    def for_agent(cls, agent: Agent | None) -> AgentTelephony:
        """The agent's row, or an unsaved one with the defaults (for no agent too)."""
        if agent is not None and agent.pk is not None:
            try:
                return agent.telephony
            except cls.DoesNotExist:
                return cls(agent=agent)
        return cls()

    def outbound_caller_id(self) -> str:
        if self.caller_id:
            return self.caller_id
        agent = self.agent if self.agent_id else None
        numbers = agent.number_list() if agent is not None else []
        return numbers[0] if numbers else voiceconv_settings.OUTBOUND_CALLER_ID

    def concurrent_limit(self) -> int:
        if self.max_concurrent_outbound is not None:
            return self.max_concurrent_outbound
        return voiceconv_settings.OUTBOUND_MAX_CONCURRENT

    def per_minute_limit(self) -> int:
        if self.max_outbound_per_minute is not None:
            return self.max_outbound_per_minute
        return voiceconv_settings.OUTBOUND_CALLS_PER_MINUTE

    def voicemail_text(self) -> str:
        return self.voicemail_message or voiceconv_settings.VOICEMAIL_MESSAGE

    def transfer_allow_list(self) -> list[str]:
        lines = self.transfer_targets.splitlines() if self.transfer_targets else list(
            voiceconv_settings.TRANSFER_ALLOW_LIST or []
        )
        return [line.strip() for line in lines if line.strip()]

    def allows_transfer_to(self, target: str) -> bool:
        """Whether ``target`` (normalised) is on the allow-list (exact, or a ``*`` prefix)."""
        for allowed in self.transfer_allow_list():
            if allowed.endswith("*") and target.startswith(allowed[:-1]):
                return True
            if target == allowed:
                return True
        return False

    def transfer_refusal(self, target: str) -> str | None:
        """Why a transfer to ``target`` (normalised) is refused, in words the model can say;
        None when the allow-list has it. An empty allow-list allows no transfer."""
        if not self.transfer_allow_list():
            return ("Transfers are not set up for this line: no transfer targets are "
                    "configured. Tell the caller you cannot transfer them.")
        if not self.allows_transfer_to(target):
            return (f"{target} is not one of the numbers this line may transfer to. Tell the "
                    "caller you cannot transfer them there.")
        return None

    def clean(self) -> None:
        """Each allow-list line must be an E.164 number, a ``sip:`` URI, or a prefix ending
        in ``*``; valid lines are saved normalised (E.164)."""
        lines, problems = [], []
        for line in (self.transfer_targets or "").splitlines():
            entry = line.strip()
            if not entry:
                continue
            try:
                lines.append(allow_list_entry(entry))
            except InvalidPhoneNumberError as exc:
                problems.append(str(exc))
        if problems:
            raise ValidationError({"transfer_targets": problems})
        self.transfer_targets = "\n".join(lines)

    def machine_detection(self) -> str:
        """Twilio's ``MachineDetection`` for this policy: the beep matters only for voicemail."""
        return "DetectMessageEnd" if self.on_machine == self.OnMachine.VOICEMAIL else "Enable"


class Recording(models.Model):
    """One recording of a call, as Twilio's recording status callback reported it."""

    call = models.ForeignKey(
        Call, on_delete=models.CASCADE, related_name="recordings", verbose_name=_("call")
    )
    twilio_recording_sid = models.CharField(_("recording SID"), max_length=64, unique=True)
    status = models.CharField(_("status"), max_length=20, blank=True)
    url = models.URLField(_("Twilio URL"), max_length=500, blank=True)
    duration_seconds = models.PositiveIntegerField(_("duration (s)"), null=True, blank=True)
    channels = models.PositiveSmallIntegerField(_("channels"), null=True, blank=True)
    source = models.CharField(_("source"), max_length=40, blank=True)
    error_code = models.CharField(_("error code"), max_length=10, blank=True)
    callback = models.JSONField(_("last callback"), default=dict, blank=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("recording")
        verbose_name_plural = _("recordings")
        ordering = ["call", "created_at"]

    def __str__(self) -> str:
        return self.twilio_recording_sid

    def as_dict(self) -> dict[str, Any]:
        return {"sid": self.twilio_recording_sid, "status": self.status, "url": self.url,
                "duration": self.duration_seconds, "channels": self.channels}


class WarmTransfer(models.Model):
    """One warm transfer of a call: the human's leg, the conference, and how it ended."""

    class Status(models.TextChoices):
        DIALLING = "dialling", _("calling the human")
        CONNECTED = "connected", _("answered; caller bridged into the conference")
        NOT_ANSWERED = "not_answered", _("not answered; caller back with the agent")
        FAILED = "failed", _("failed; caller back with the agent")

    call = models.ForeignKey(
        Call, on_delete=models.CASCADE, related_name="warm_transfers", verbose_name=_("call")
    )
    target = models.CharField(_("target"), max_length=255)
    brief = models.TextField(_("brief"), blank=True,
                             help_text=_("What the human heard before being connected."))
    conference = models.CharField(_("conference"), max_length=128)
    human_call_sid = models.CharField(_("human's call SID"), max_length=64, blank=True,
                                      db_index=True)
    status = models.CharField(_("status"), max_length=16, choices=Status.choices,
                              default=Status.DIALLING)
    human_status = models.CharField(_("human's last call status"), max_length=20, blank=True)
    detail = models.CharField(_("detail"), max_length=500, blank=True)
    created_at = models.DateTimeField(_("started"), auto_now_add=True)
    answered_at = models.DateTimeField(_("answered"), null=True, blank=True)
    finished_at = models.DateTimeField(_("outcome at"), null=True, blank=True)

    class Meta:
        verbose_name = _("warm transfer")
        verbose_name_plural = _("warm transfers")
        ordering = ["call", "created_at"]

    def __str__(self) -> str:
        return f"warm transfer of {self.call_id} to {self.target} ({self.status})"
