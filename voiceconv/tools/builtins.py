"""voiceconv's built-in call-control tools: ``end_call`` and ``transfer_call``.

They are registered like any other tool (this module is imported with the package), so an
operator enables them per agent in the admin. They act through the call's
:class:`~voiceconv.tools.runtime.CallControl`, which the consumer implements.
"""

from __future__ import annotations

from voiceconv.exceptions import InvalidPhoneNumberError
from voiceconv.phone import transfer_target
from voiceconv.tools.registry import tool
from voiceconv.tools.runtime import CallControl

__all__ = ["end_call", "transfer_call"]

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
    control.transfer_call(destination)
    return {
        "status": "transferring",
        "target": destination,
        "instruction": "Tell the caller in one short sentence that you are transferring them.",
    }
