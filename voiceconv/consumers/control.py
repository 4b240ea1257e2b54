"""Steering a live call: hang-up, transfer (cold and warm), the channel layer's control
messages (``voiceconv.hangup``, ``voiceconv.say``, ``voiceconv.control`` from
:mod:`voiceconv.control`, Twilio's status and answering-machine callbacks), and the
``control`` object handed to tools."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, cast

from asgiref.sync import sync_to_async

from voiceconv import live_control, twilio_rest, warm_transfer
from voiceconv.conf import voiceconv_settings
from voiceconv.consumers.base import ConsumerBase, describe
from voiceconv.exceptions import InvalidPhoneNumberError
from voiceconv.phone import transfer_target
from voiceconv.telephony import CallTelephony


class CallControl(ConsumerBase):
    """Ending and transferring the call, from the model, a tool, or anywhere else."""

    async def request_hangup(self, reason: str = "agent_ended") -> None:
        if not self.session.state.started:
            return
        await self.run_actions(self.session.request_hangup(reason))

    def transfer_refusal(self, target: str) -> str | None:
        """Why a transfer to ``target`` is refused (not a valid target, or not on the agent's
        allow-list), in words the model can say; None when it may go ahead."""
        try:
            destination = transfer_target(target)
        except InvalidPhoneNumberError as exc:
            return str(exc)
        if self.telephony is None:
            return "This call cannot be transferred."
        return cast("str | None", self.telephony.settings.transfer_refusal(destination))

    async def request_transfer(self, target: str) -> str | None:
        """Announce, then transfer to ``target``; the refusal (logged) when the agent's
        allow-list does not have it, None once requested."""
        if not self.session.state.started:
            return "the call has not started"
        refusal = self.transfer_refusal(target)
        if refusal is not None:
            self.log.warning("transfer to %s refused: %s", target, refusal)
            return refusal
        await self.run_actions(self.session.request_transfer(target))
        return None

    async def _hangup_deadline(self) -> None:
        await asyncio.sleep(voiceconv_settings.timeouts.hangup_grace)
        if self._end_reason is None:
            await self.run_actions(self.session.hangup_overdue())

    async def hang_up(self, reason: str) -> None:
        """End the call from our side: closing the stream ends it (nothing follows Connect)."""
        self.log.info("hanging up (%s)", reason)
        await self.end(reason)

    async def transfer(self, target: str) -> None:
        """Hand the caller to ``target`` through Twilio's REST API."""
        assert self.info is not None
        try:
            await sync_to_async(twilio_rest.transfer_call, thread_sensitive=False)(
                self.info.call_sid, target
            )
        except Exception as exc:
            self.log.error("transfer to %s failed: %s", target, describe(exc))
            await self.end("error", f"transfer to {target} failed: {describe(exc)}")
            return
        self.log.info("transferred to %s", target)
        await self.end("transferred")

    async def voiceconv_hangup(self, message: dict[str, Any]) -> None:
        """Channel-layer control: ``{"type": "voiceconv.hangup"}`` to the call's group."""
        await self.request_hangup(str(message.get("reason") or "agent_ended"))

    async def start_telephony(self) -> Any:
        """The call's :class:`voiceconv.telephony.CallTelephony` (None: no telephony)."""
        return await CallTelephony.start(self)

    async def voiceconv_warm_transfer(self, message: dict[str, Any]) -> None:
        """The status of a warm transfer's human leg (voiceconv.warm_transfer)."""
        await warm_transfer.on_status(self, int(message.get("transfer") or 0),
                                      str(message.get("status") or ""))

    async def voiceconv_amd(self, message: dict[str, Any]) -> None:
        """Channel-layer control: Twilio's answering-machine verdict for an outbound call."""
        if self.telephony is not None:
            await self.telephony.on_verdict(str(message.get("answered_by") or ""))

    async def voiceconv_say(self, message: dict[str, Any]) -> None:
        """Channel-layer control: ``{"type": "voiceconv.say", "instructions": …}``."""
        await self.run_actions(self.session.say(str(message.get("instructions", ""))))

    async def voiceconv_control(self, message: dict[str, Any]) -> None:
        """A :mod:`voiceconv.control` request (or Twilio's status callback) for this call."""
        await live_control.handle(self, message)

    # ------------------------------------------------------------------ the end


class ToolControl:
    """The ``control`` handed to tools: thread-safe requests to end or transfer the call and
    to send digits."""

    def __init__(self, consumer: ConsumerBase) -> None:
        self._consumer = consumer
        self._loop = asyncio.get_running_loop()

    def _soon(self, coro_fn: Callable[[], Awaitable[None]]) -> None:
        def schedule() -> None:
            self._consumer.spawn(coro_fn())

        self._loop.call_soon_threadsafe(schedule)

    def end_call(self, reason: str = "agent_ended") -> None:
        self._soon(lambda: self._consumer.request_hangup(reason))

    def transfer_call(self, target: str) -> None:
        async def transfer() -> None:
            await self._consumer.request_transfer(target)

        self._soon(transfer)

    def transfer_refusal(self, target: str) -> str | None:
        return self._consumer.transfer_refusal(target)

    def warm_transfer(self, target: str, brief: str) -> None:
        async def begin() -> None:
            refusal = await warm_transfer.start(self._consumer, target, brief)
            if refusal:
                self._consumer.log.warning("warm transfer to %s refused: %s", target, refusal)

        self._soon(begin)

    def send_dtmf(self, digits: str) -> None:
        self._soon(lambda: live_control.send_dtmf(self._consumer, digits))

