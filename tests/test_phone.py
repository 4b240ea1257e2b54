"""Phone numbers and transfer targets: one place, through phonenumbers."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from voiceconv.exceptions import InvalidPhoneNumberError
from voiceconv.models import Agent
from voiceconv.phone import normalize_number, number_key, transfer_target


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+1 (415) 555-0100", "+14155550100"),
        ("+44 20 7946 0958", "+442079460958"),
        ("0044 20 7946 0958", "+442079460958"),
        ("+49 151 1234 5678", "+4915112345678"),
        ("  +33.6.12.34.56.78 ", "+33612345678"),
    ],
)
def test_normalize_number_gives_e164(raw: str, expected: str) -> None:
    assert normalize_number(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "555-0100",  # no country: not guessed
        "+1 000 000 0000",  # possible length, but no such range
        "+44 12",  # too short
        "+0123456789",
        "call mom",
        "",
    ],
)
def test_normalize_number_refuses_what_is_not_a_valid_number(raw: str) -> None:
    with pytest.raises(InvalidPhoneNumberError) as caught:
        normalize_number(raw)
    assert isinstance(caught.value, ValueError) and repr(raw) in str(caught.value)


def test_number_key_matches_spellings_and_never_raises() -> None:
    assert number_key("+1 (415) 555-0100") == number_key("+14155550100") == "+14155550100"
    assert number_key("0044 20 7946 0958") == "+442079460958"
    assert number_key("client:alice") == "client:alice"  # a browser client's To
    assert number_key(" ") == ""


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+1 (415) 555-0100", "+14155550100"),
        ("sip:desk@pbx.example.com", "sip:desk@pbx.example.com"),
        ("SIPS:desk@pbx.example.com", "SIPS:desk@pbx.example.com"),
    ],
)
def test_transfer_target(raw: str, expected: str) -> None:
    assert transfer_target(raw) == expected


@pytest.mark.parametrize("raw", ["sip:nohost", "sip:a b@host", "+1 000 000 0000", "the manager"])
def test_transfer_target_refuses(raw: str) -> None:
    with pytest.raises(InvalidPhoneNumberError, match=r"not a valid|international format"):
        transfer_target(raw)


@pytest.mark.django_db
def test_agent_numbers_are_validated_and_stored_in_e164() -> None:
    numbers = "+1 (415) 555-0100\n\n0044 20 7946 0958"
    agent = Agent(name="Support", slug="support", phone_numbers=numbers)
    agent.full_clean()
    assert agent.phone_numbers == "+14155550100\n+442079460958"
    agent.phone_numbers = "+1 415 555 0100\n555-0100"
    with pytest.raises(ValidationError) as caught:
        agent.full_clean()
    assert "'555-0100'" in str(caught.value.message_dict["phone_numbers"])
