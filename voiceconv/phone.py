"""Phone numbers and transfer targets, normalised and validated in one place.

Parsing and validation go through ``phonenumbers``, the maintained Python port of Google's
libphonenumber, whose per-country metadata (lengths, ranges, formatting) is updated with every
numbering-plan change; hand-written rules cannot keep up with that. Numbers are written in
international format (``+`` or the ``00`` international prefix, then the country code): a
number's country cannot be guessed on a server taking calls from anywhere.

- :func:`normalize_number`: any international spelling -> E.164 (``"+14155550100"``); raises
  :class:`~voiceconv.exceptions.InvalidPhoneNumberError` for anything that is not a valid number.
- :func:`number_key`: the form used to match numbers (an agent's numbers against a call's
  ``To``): E.164 when the text parses as a number, the text without spaces otherwise
  (``client:alice``), never raising.
- :func:`transfer_target`: an E.164 number or a ``sip:``/``sips:`` URI to hand a call to.
"""

from __future__ import annotations

import re

import phonenumbers

from voiceconv.exceptions import InvalidPhoneNumberError

__all__ = ["normalize_number", "number_key", "transfer_target"]

_SIP_RE = re.compile(r"^sips?:[^@\s<>\"]+@[^\s<>\"]+$", re.IGNORECASE)
_SPACES_RE = re.compile(r"\s+")


def _parse(text: str) -> phonenumbers.PhoneNumber:
    compact = (text or "").strip()
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    return phonenumbers.parse(compact, None)


def normalize_number(text: str) -> str:
    """``text`` (``"+1 (415) 555-0100"``, ``"0044 20 7946 0958"``) in E.164 form.

    Raises :class:`~voiceconv.exceptions.InvalidPhoneNumberError` unless it is a valid number
    in international format.
    """
    try:
        number = _parse(text)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhoneNumberError(
            f"{text!r} is not a phone number in international format (+14155550100)"
        ) from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhoneNumberError(f"{text!r} is not a valid phone number")
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def number_key(text: str) -> str:
    """The form in which two spellings of one number compare equal ("" for blank text)."""
    try:
        number = _parse(text)
    except phonenumbers.NumberParseException:
        return _SPACES_RE.sub("", text or "")
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def transfer_target(text: str) -> str:
    """A valid number in E.164 form, or a ``sip:user@host`` URI as given.

    Raises :class:`~voiceconv.exceptions.InvalidPhoneNumberError` for anything else.
    """
    target = (text or "").strip()
    if target.lower().startswith(("sip:", "sips:")):
        if _SIP_RE.match(target):
            return target
        raise InvalidPhoneNumberError(f"{text!r} is not a valid SIP address (sip:user@host)")
    try:
        return normalize_number(target)
    except InvalidPhoneNumberError as exc:
        raise InvalidPhoneNumberError(
            f"{text!r} is not a phone number in international format (+14155550100) "
            "or a SIP address"
        ) from exc
