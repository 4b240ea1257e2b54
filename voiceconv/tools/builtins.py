"""voiceconv's built-in call-control tools: ``end_call``, ``transfer_call``,
``warm_transfer``, ``send_dtmf``.

They are registered like any other tool (this module is imported with the package), so an
operator enables them per agent in the admin. They act through the call's
:class:`~voiceconv.tools.runtime.CallControl`, which the consumer implements.
"""

from __future__ import annotations

import logging
import re

from voiceconv.exceptions import InvalidPhoneNumberError
from voiceconv.phone import transfer_target
from voiceconv.tools.registry import tool
from voiceconv.tools.runtime import CallControl

__all__ = ["end_call", "send_dtmf", "transfer_call", "warm_transfer"]

logger = logging.getLogger("voiceconv.tools")
_DTMF = re.compile(r"^[0-9A-Da-d*#wW]{1,32}$")


@tool
async def end_call(
    reason: str = "The conversation is complete.", control: CallControl | None = None
) -> dict[str, str]:
    """End the phone call.

    Use this when the caller says goodbye or the conversation is finished. The call ends after
    your goodbye has been heard, so say a short goodbye right after calling this.

    Args:
        reason: Why the call is ending, in a few words.
    """
    if control is None:
        return {"status": "unavailable", "error": "This call cannot be ended from here."}
    control.end_call("agent_ended")
    return {"status": "ending", "instruction": "Say a short goodbye now."}


@tool
async def transfer_call(target: str, control: CallControl | None = None) -> dict[str, str]:
    """Transfer the caller to another phone number or SIP address.

    Args:
        target: The phone number in international format (for example +14155550100) or a SIP
            address (sip:user@example.com).
    """
    try:
        destination = transfer_target(target)
    except InvalidPhoneNumberError as exc:
        return {"status": "invalid_target", "error": str(exc)}
    if control is None:
        return {"status": "unavailable", "error": "This call cannot be transferred from here."}
    refusal = control.transfer_refusal(destination)
    if refusal is not None:
        logger.warning("transfer_call to %s refused: %s", destination, refusal)
        return {"status": "not_allowed", "target": destination, "error": refusal}
    control.transfer_call(destination)
    return {
        "status": "transferring",
        "target": destination,
        "instruction": "Tell the caller in one short sentence that you are transferring them.",
    }


@tool
async def send_dtmf(digits: str, control: CallControl | None = None) -> dict[str, str]:
    """Press keys on the phone keypad, to navigate an automated phone menu.

    The tones are heard by the other side after what you have already said. Do not speak
    over a menu you are navigating: send the digits, then wait for the menu's answer.

    Args:
        digits: The keys to press, in order: 0-9, * and #, A-D; w waits half a second
            (for example "1w2#").
    """
    keys = (digits or "").strip().replace(" ", "")
    if not _DTMF.match(keys):
        return {"status": "invalid_digits",
                "error": f"{digits!r} is not a key sequence (0-9, *, #, A-D, w for a pause)."}
    if control is None:
        return {"status": "unavailable", "error": "Keys cannot be pressed on this call."}
    keys = keys.upper().replace("W", "w")
    control.send_dtmf(keys)
    return {"status": "sent", "digits": keys}


@tool
async def warm_transfer(
    target: str, brief: str, control: CallControl | None = None
) -> dict[str, str]:
    """Hand the caller to a person, who is told about the call first.

    The caller waits on hold while the person's phone rings; the person hears your brief, then
    is connected with the caller. If nobody answers you will be told, and the caller stays with
    you.

    Args:
        target: The person's phone number in international format (+14155550100) or SIP
            address.
        brief: Two or three sentences for the person: who is calling, what they want, what
            has been done so far.
    """
    try:
        destination = transfer_target(target)
    except InvalidPhoneNumberError as exc:
        return {"status": "invalid_target", "error": str(exc)}
    if control is None:
        return {"status": "unavailable", "error": "This call cannot be transferred from here."}
    refusal = control.transfer_refusal(destination)
    if refusal is not None:
        logger.warning("warm_transfer to %s refused: %s", destination, refusal)
        return {"status": "not_allowed", "target": destination, "error": refusal}
    control.warm_transfer(destination, (brief or "").strip())
    return {
        "status": "calling",
        "target": destination,
        "instruction": "Ask the caller in one short sentence to hold while you connect them, "
                       "then say nothing more until you are told how the transfer went.",
    }
