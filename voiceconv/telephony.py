"""Telephony in a live call: the answering-machine verdict and the agent's policy for it.

The AMD callback view records Twilio's verdict and calls :func:`deliver_verdict`, which sends
``{"type": "voiceconv.amd", "answered_by": …}`` to the call's channel-layer group, so the
process holding the call gets it whichever it is. The consumer hands it to its
:class:`CallTelephony`, which follows the agent's :class:`~voiceconv.models.AgentTelephony`:

- a person (or ``unknown``): talk; a greeting held for the verdict is said now;
- a machine, policy ``hang_up``: end the call (reason ``answering_machine``);
- a machine, policy ``voicemail``: wait for the end of the machine's message (the beep;
  Twilio's ``DetectMessageEnd``), stop whatever the agent is saying, leave the voicemail
  (the text word for word, or spoken by the model from it as a prompt), then hang up once it
  has been heard (reason ``voicemail``);
- a machine, policy ``talk``: as for a person;
- a fax: hang up.

None of this runs on the audio path: verdicts arrive as control messages.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer

from voiceconv import active_calls
from voiceconv.conf import voiceconv_settings
from voiceconv.session import SendToRealtime
from voiceconv.session.messages import dumps

if TYPE_CHECKING:
    from voiceconv.consumers.base import ConsumerBase
    from voiceconv.models import AgentTelephony

__all__ = ["CallTelephony", "adeliver_verdict", "deliver_verdict"]

logger = logging.getLogger("voiceconv.telephony")

MACHINE_VERDICTS = frozenset(
    {"machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other"}
)
MESSAGE_END_VERDICTS = frozenset(
    {"machine_end_beep", "machine_end_silence", "machine_end_other"}
)
#: Seconds to wait for the agent to fall silent before the voicemail is left anyway.
SILENCE_WAIT = 5.0


def _group(call_sid: str) -> str:
    return active_calls.group_name(call_sid)


async def adeliver_verdict(call_sid: str, answered_by: str) -> bool:
    """Send the verdict to the live call's group; False (and a log line) when it cannot."""
    layer = get_channel_layer()
    if layer is None:
        logger.warning("call %s: no channel layer; AMD verdict %s not delivered", call_sid,
                       answered_by)
        return False
    try:
        await layer.group_send(
            _group(call_sid), {"type": "voiceconv.amd", "answered_by": answered_by}
        )
    except Exception as exc:
        logger.error("call %s: AMD verdict %s not delivered: %s: %s", call_sid, answered_by,
                     type(exc).__name__, exc)
        return False
    return True


def deliver_verdict(call_sid: str, answered_by: str) -> bool:
    """:func:`adeliver_verdict` for sync code (views)."""
    return bool(async_to_sync(adeliver_verdict)(call_sid, answered_by))


def voicemail_instructions(telephony: AgentTelephony) -> str:
    """The ``response.create`` instructions that leave the agent's voicemail."""
    # Imported here, not at the top: the models need Django's app registry, and this module is
    # importable before it is ready.
    from voiceconv.models import AgentTelephony

    text = telephony.voicemail_text()
    if telephony.voicemail_mode == AgentTelephony.VoicemailMode.PROMPT:
        return (
            "You reached an answering machine and its beep has sounded. Leave a short "
            "voicemail now, in one go, then stop. What to say: " + text
        )
    return (
        "You reached an answering machine and its beep has sounded. Say exactly the "
        "following message, word for word, and nothing else: " + text
    )


class CallTelephony:
    """The telephony side of one live call (made by the consumer at stream start)."""

    def __init__(
        self, consumer: ConsumerBase, telephony: AgentTelephony, *, outbound: bool
    ) -> None:
        self.consumer = consumer
        self.settings = telephony
        self.outbound = outbound
        #: The first verdict that decided something (later ones are logged and ignored).
        self.verdict: str | None = None
        self.waiting_for_verdict = False
        self._early_verdict = ""

    @staticmethod
    async def load_settings(consumer: ConsumerBase) -> AgentTelephony:
        """The agent's telephony row (the defaults without one), read in a thread of its own
        within ``START_DATABASE_TIMEOUT``: a hanging database never holds up other calls'
        starts, and this call goes on with the defaults."""
        # Imported here, not at the top: the models need Django's app registry, and this module is
        # importable before it is ready.
        from voiceconv.models import AgentTelephony

        agent = consumer.agent
        row = None
        if agent is not None:
            read = sync_to_async(
                lambda: AgentTelephony.objects.filter(agent_id=agent.pk).first(),
                thread_sensitive=False,
            )
            try:
                row = await asyncio.wait_for(
                    read(), voiceconv_settings.timeouts.start_database
                )
            except TimeoutError:
                consumer.log.error(
                    "the agent's telephony settings were not read within %s s; going on with "
                    "the defaults", voiceconv_settings.timeouts.start_database,
                )
            except Exception:
                consumer.log.exception("could not load the agent's telephony settings")
        telephony = row or AgentTelephony.for_agent(None)
        if agent is not None and row is None:
            telephony.agent = agent
        return telephony

    @classmethod
    async def start(cls, consumer: ConsumerBase) -> CallTelephony:
        """Load the agent's telephony row and prepare the session before it is sent."""
        info = consumer.info
        assert info is not None
        telephony = await cls.load_settings(consumer)
        self = cls(consumer, telephony, outbound=info.direction.startswith("outbound"))
        if telephony.record_calls:
            self._start_recording()
        if self.outbound:
            self._prepare_outbound()
            # The stream joined its group before this: a verdict posted earlier is in the row.
            from voiceconv.models import Call

            if info.call_pk is not None:
                try:
                    self._early_verdict = await Call.objects.filter(
                        pk=info.call_pk
                    ).values_list("answered_by", flat=True).afirst() or ""
                except Exception as exc:
                    consumer.log.warning("could not read the AMD verdict: %s", exc)
        return self

    def _start_recording(self) -> None:
        """Record the call through Twilio (off the audio path) and announce it if asked."""
        # Imported here, not at the top: voiceconv.recordings imports the models, and this module is
        # importable before the app registry is ready.
        from voiceconv.recordings import start_recording

        info = self.consumer.info
        session = self.consumer.session
        assert info is not None and session is not None
        self.consumer.spawn(asyncio.to_thread(start_recording, info.call_sid))
        if self.settings.announce_recording:
            announcement = voiceconv_settings.RECORDING_ANNOUNCEMENT
            if announcement:
                first = f'First say exactly: "{announcement}"'
                session.greeting = (
                    f"{first} Then: {session.greeting}" if session.greeting else first
                )

    def _prepare_outbound(self) -> None:
        # Imported here, not at the top: the models need Django's app registry, and this module is
        # importable before it is ready.
        from voiceconv.models import AgentTelephony

        session = self.consumer.session
        assert session is not None
        wait = self.settings.greeting_wait
        if wait == AgentTelephony.GreetingWait.NONE:
            return
        session.hold_greeting = True
        if wait == AgentTelephony.GreetingWait.AMD:
            self.waiting_for_verdict = True
            self._set_create_response(False)

    def _set_create_response(self, on: bool) -> dict[str, Any] | None:
        """Switch the model's automatic answers on or off in the call's session config;
        the turn detection object to send, or None when VAD is off."""
        config = self.consumer.session_config
        audio_in = ((config.get("audio") or {}).get("input")) or {}
        detection = audio_in.get("turn_detection")
        if not isinstance(detection, dict):
            return None
        detection["create_response"] = on
        return dict(detection)

    async def after_start(self) -> None:
        """Apply a verdict that came before the stream joined its group (read at start)."""
        if self._early_verdict:
            await self.on_verdict(self._early_verdict)

    async def on_verdict(self, answered_by: str) -> None:
        """Follow the agent's policy for Twilio's ``AnsweredBy``."""
        # Imported here, not at the top: the models need Django's app registry, and this module is
        # importable before it is ready.
        from voiceconv.models import AgentTelephony

        log = self.consumer.log
        if self.verdict is not None:
            log.info("AMD verdict %s after %s: ignored", answered_by, self.verdict)
            return
        policy = self.settings.on_machine
        if answered_by == "fax":
            self.verdict = answered_by
            log.info("answered by a fax: hanging up")
            await self.consumer.request_hangup("answering_machine")
            return
        if answered_by in MACHINE_VERDICTS and policy != AgentTelephony.OnMachine.TALK:
            if policy == AgentTelephony.OnMachine.HANG_UP:
                self.verdict = answered_by
                log.info("answered by a machine (%s): hanging up", answered_by)
                await self._stop_talking()
                await self.consumer.request_hangup("answering_machine")
                return
            if answered_by not in MESSAGE_END_VERDICTS:
                log.info("answered by a machine: waiting for the end of its message")
                return
            self.verdict = answered_by
            log.info("machine message ended (%s): leaving the voicemail", answered_by)
            self.consumer.spawn(self._leave_voicemail())
            return
        self.verdict = answered_by
        log.info("answered by %s: talking", answered_by)
        self.consumer.spawn(self._talk())

    async def _ready(self) -> bool:
        """Wait (bounded) until the Realtime session is ready; False if it never is."""
        session = self.consumer.session
        deadline = asyncio.get_running_loop().time() + voiceconv_settings.timeouts.connect
        while session is not None and not session.state.realtime_ready:
            if session.state.ended or asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.05)
        return session is not None and not session.state.ended

    async def _talk(self) -> None:
        """A person answered. Waiting for the verdict: switch the model's automatic answers
        back on and say the held greeting (otherwise the agent is already talking)."""
        session = self.consumer.session
        if session is None or not self.waiting_for_verdict:
            return
        self.waiting_for_verdict = False
        detection = self._set_create_response(True)
        if not await self._ready():
            return
        if detection is not None:
            await self.consumer.run_actions([SendToRealtime(dumps({
                "type": "session.update",
                "session": {"type": "realtime",
                            "audio": {"input": {"turn_detection": detection}}},
            }))])
        session.hold_greeting = False
        await self.consumer.run_actions(session.greet())

    async def _stop_talking(self) -> None:
        session = self.consumer.session
        if session is not None and session.state.realtime_ready and session.busy():
            await self.consumer.run_actions(session.barge_in())

    async def _leave_voicemail(self) -> None:
        session = self.consumer.session
        if session is None or not await self._ready():
            self.consumer.log.warning("voicemail not left: the Realtime session is not ready")
            await self.consumer.request_hangup("answering_machine")
            return
        session.hold_greeting = True  # whatever happens, no greeting to a machine
        await self._stop_talking()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SILENCE_WAIT
        while session.state.response_active and loop.time() < deadline:
            await asyncio.sleep(0.05)
        actions = session.say(voicemail_instructions(self.settings))
        if not actions:
            self.consumer.log.warning("voicemail not left: the agent did not fall silent")
        await self.consumer.run_actions(actions)
        await self.consumer.request_hangup("voicemail")
