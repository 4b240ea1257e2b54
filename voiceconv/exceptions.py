"""voiceconv's errors and warnings, in one family.

- :class:`VoiceconvError` is the base of the errors voiceconv raises while it runs.
- :class:`ConfigurationError` (and :class:`ToolDeclarationError`) are Django's
  ``ImproperlyConfigured``, deliberately outside the base, so an ``except VoiceconvError`` meant
  for a call's troubles never swallows a broken setup (as django-anymail does).
- :class:`ProtocolError` says whose fault a broken wire exchange is, as h11 splits local from
  remote errors: :class:`TwilioProtocolError` and :class:`OpenAIProtocolError` are the peer's
  (:class:`RemoteProtocolError`), :class:`LocalProtocolError` is ours. ``fault`` names the party,
  so a log line or a ``Call`` record can say who broke the call without parsing messages.
- :class:`ToolArgumentsError` and :class:`InvalidPhoneNumberError` are bad values (``ValueError``
  too): the model's tool arguments, a phone number or transfer target.
- :class:`InsecureSetupWarning` flags a setup that lets strangers in (signature checks or the
  stream token switched off); it is a ``UserWarning``, given once per switch and process.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from django.core.exceptions import ImproperlyConfigured

__all__ = [
    "ConfigurationError",
    "Fault",
    "InsecureSetupWarning",
    "InvalidPhoneNumberError",
    "LocalProtocolError",
    "OpenAIProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
    "ToolArgumentsError",
    "ToolDeclarationError",
    "TwilioProtocolError",
    "VoiceconvError",
    "VoiceconvWarning",
]

#: Who broke a wire exchange: one of the two peers, or voiceconv itself.
Fault = Literal["twilio", "openai", "voiceconv"]


class VoiceconvError(Exception):
    """Base class of the errors voiceconv raises while it runs."""


# --- configuration ------------------------------------------------------------------------


class ConfigurationError(ImproperlyConfigured):
    """voiceconv is set up wrongly: a setting, a credential, a dotted path.

    The message names the setting. Not a :class:`VoiceconvError`, on purpose.
    """


class ToolDeclarationError(ConfigurationError):
    """A ``@tool`` function cannot be a tool (its message names the function)."""


# --- protocol -----------------------------------------------------------------------------


class ProtocolError(VoiceconvError):
    """A message broke Twilio's or OpenAI's wire protocol; :attr:`fault` says whose fault."""

    fault: ClassVar[Fault]


class RemoteProtocolError(ProtocolError):
    """A peer sent something its protocol does not allow."""


class TwilioProtocolError(RemoteProtocolError):
    """Twilio (or whoever holds the media stream socket) sent a message we refuse."""

    fault = "twilio"


class OpenAIProtocolError(RemoteProtocolError):
    """The Realtime API sent an event we cannot use, or refused ours."""

    fault = "openai"


class LocalProtocolError(ProtocolError):
    """voiceconv (or code it runs, such as a hook) was about to break a protocol: our bug."""

    fault = "voiceconv"


# --- values -------------------------------------------------------------------------------


class ToolArgumentsError(VoiceconvError, ValueError):
    """The model's arguments for a tool do not fit the tool's schema."""


class InvalidPhoneNumberError(VoiceconvError, ValueError):
    """Not a phone number voiceconv can dial or match (or a SIP address, where one is allowed)."""


# --- warnings -----------------------------------------------------------------------------


class VoiceconvWarning(UserWarning):
    """Base class of voiceconv's warnings."""


class InsecureSetupWarning(VoiceconvWarning):
    """A check that keeps strangers out is switched off."""
