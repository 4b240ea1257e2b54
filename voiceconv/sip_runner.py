"""The sideband of a SIP call: the call core without media, on OpenAI's ``call_id`` socket.

On OpenAI's SIP path the caller's audio goes to OpenAI and never through this server. The
app still runs the call: :class:`SipCallRunner` attaches to the call's sideband socket
(``client.realtime.connect(call_id=…)``) and runs the same :class:`~voiceconv.session.CallSession`
(in its no-media mode), the same tool runtime, transcript recorder, live monitor and control
API as a media-stream call. It *is* a :class:`~voiceconv.consumers.MediaStreamConsumer` with
the Twilio socket taken out: what differs is only how the call starts (the webhook, not a
``start`` message), how it ends (``hangup`` through OpenAI's REST API when the app ends it; the
sideband closing when the caller does) and how it is transferred (SIP ``REFER``).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import Any, cast

from channels.layers import get_channel_layer

from voiceconv.calllog import CallLog
from voiceconv.conf import voiceconv_settings
from voiceconv.consumers import MediaStreamConsumer, close_quietly, describe
from voiceconv.realtime import OpenAIRealtimeBackend, RealtimeBackend
from voiceconv.session import StreamStart, dumps
from voiceconv.sip import IncomingSipCall, refer_uri, sip_session
from voiceconv.telephony import CallTelephony

logger = logging.getLogger("voiceconv.sip")

#: Runners in progress in this process (so their tasks are not garbage-collected).
RUNNING: set[asyncio.Task[None]] = set()

#: End reasons after which the SIP call is already over at OpenAI (nothing to hang up).
_ENDED_BY_PEER = frozenset({"caller_hung_up", "transferred"})


async def _nowhere(text: str) -> None:
    """Where Twilio-bound text would go: there is no Twilio socket on a SIP call."""


class SipCallRunner(MediaStreamConsumer):
    """One SIP call's sideband ⇄ the call core. Built and started by the webhook view.

    Subclass it (and pass the class to :func:`voiceconv.sip_views.incoming_sip_call`'s
    ``runner_class``) to override the same hooks as on the consumer.
    """

    def __init__(self, incoming: IncomingSipCall, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.incoming = incoming
        self.call_id = incoming.call_id
        self.scope = cast(Any, {"type": "sip", "headers": [], "path": ""})
        self.log = CallLog(logger, incoming.call_id)
        # There is no Twilio socket: nothing is ever sent to one, nothing to close.
        self._closed = True
        self._send_text = _nowhere
        self._hung_up = False
        self._call_pk: int | None = None
        self.session.begin_without_media(incoming.call_id, incoming.custom_parameters())

    # ------------------------------------------------------------------ preparing (sync)

    def prepare(self, agent: Any) -> dict[str, Any]:
        """Load the agent's tools and build the session (sync, in a worker thread; may use
        the database): the accept's config, built by the consumer's own hooks."""
        self.agent = agent
        self.tools = self.get_tools()
        self.session_config = self.get_session_config()
        return self.session_config

    # ------------------------------------------------------------------ running

    def start(self, call_pk: int | None) -> asyncio.Task[None]:
        """Run the call in a task of the server's event loop (the webhook has answered)."""
        # A fresh context: the webhook request's (its sync_to_async executor, which ends with
        # the response) must not be inherited by a call that outlives it.
        task = asyncio.get_running_loop().create_task(self.run(call_pk),
                                                      context=contextvars.Context())
        RUNNING.add(task)
        task.add_done_callback(RUNNING.discard)
        return task

    async def run(self, call_pk: int | None) -> None:
        """The whole call: start it as the consumer starts a stream, pump the sideband, end."""
        # None when no layer is configured, as in Channels' own consumers (typed without None).
        self.channel_layer = get_channel_layer(self.channel_layer_alias)  # type: ignore[assignment]
        layer_task: asyncio.Task[None] | None = None
        if self.channel_layer is not None:
            self.channel_name = await self.channel_layer.new_channel()
            layer_task = asyncio.create_task(self._layer_loop())
        self._call_pk = call_pk
        try:
            await self.handle_start(StreamStart(
                stream_sid="", call_sid=self.call_id,
                custom_parameters=self.incoming.custom_parameters(),
            ))
            if self._realtime_task is not None:
                await asyncio.gather(self._realtime_task, return_exceptions=True)
        except asyncio.CancelledError:
            if self._end_reason is None:
                self._end_reason = "shutdown"
        finally:
            if layer_task is not None:
                layer_task.cancel()
                await asyncio.gather(layer_task, return_exceptions=True)
            await self._finish_uncancellable(self._end_reason or "caller_hung_up")

    def start_refusal(self, start: StreamStart) -> str | None:
        return None  # the webhook's signature was the check

    async def claim_call(self) -> str | None:
        """The webhook recorded the call and loaded the agent and tools already."""
        assert self.info is not None
        self.info.call_pk = self._call_pk
        self.info.agent_pk = self.agent.pk if self.agent is not None else None
        return None

    def get_session_config(self) -> dict[str, Any]:
        if self.session_config:
            return self.session_config
        return sip_session(super().get_session_config())

    async def start_telephony(self) -> Any:
        """The agent's telephony settings, for its transfer allow-list; outbound calls, AMD
        and Twilio recordings belong to the media path."""
        return CallTelephony(self, await CallTelephony.load_settings(self), outbound=False)

    def get_backend(self) -> RealtimeBackend:
        if self.backend_factory is not None:
            return self.backend_factory(self)
        return OpenAIRealtimeBackend(self.get_openai_client(), self.get_model(),
                                     call_id=self.call_id)

    async def realtime_loop(self) -> None:
        """Attach to the call's sideband and pump it until it closes (the call is over then).

        No reconnect: the conversation lives on at OpenAI with the call, so a new socket must
        not replay it; a sideband that cannot be opened ends (hangs up) the call.
        """
        backend = self.get_backend()
        try:
            await asyncio.wait_for(backend.connect(), float(self._connect_timeout()))
            await backend.send(dumps({"type": "session.update", "session": self.session_config}))
        except asyncio.CancelledError:
            await close_quietly(backend)
            raise
        except Exception as exc:
            await close_quietly(backend)
            self.log.error("could not attach to the call's sideband: %s", describe(exc))
            await self.end("openai_error", f"sideband connect failed: {describe(exc)}")
            return
        self.backend = backend
        watchdog = self.spawn(self._ready_watchdog(backend))
        self.spawn(self._clock())
        try:
            await self._pump(backend)
            reason = "closed by the server"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = describe(exc)
        finally:
            watchdog.cancel()
        if self._end_reason is None:
            self.log.info("sideband closed (%s): the call is over", reason)
            self._end_reason = (
                "caller_hung_up" if self.session.state.realtime_ready else "openai_error"
            )

    @staticmethod
    def _connect_timeout() -> float:
        return float(voiceconv_settings.CONNECT_TIMEOUT)

    async def _clock(self) -> None:
        """Call time for the core's limits (there are no media timestamps to carry it)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        while self._end_reason is None:
            await asyncio.sleep(0.25)
            now_ms = int((loop.time() - started) * 1000)
            await self.run_actions(self.session.tick(now_ms))

    # ------------------------------------------------------------------ the call's end

    async def play_apology(self) -> None:
        """No audio reaches the caller from here; the call is hung up instead."""

    async def hang_up(self, reason: str) -> None:
        self.log.info("hanging up (%s)", reason)
        await self.end(reason)

    async def transfer(self, target: str) -> None:
        """Transfer the caller with a SIP REFER through OpenAI's REST API."""
        uri = refer_uri(target)
        try:
            await self.get_openai_client().realtime.calls.refer(self.call_id, target_uri=uri)
        except Exception as exc:
            self.log.error("transfer to %s failed: %s", uri, describe(exc))
            await self.end("error", f"transfer to {uri} failed: {describe(exc)}")
            return
        self.log.info("transferred to %s", uri)
        await self.end("transferred")

    async def _finish(self, reason: str, error: str) -> None:
        if reason not in _ENDED_BY_PEER and not self._hung_up:
            self._hung_up = True
            try:
                await asyncio.wait_for(
                    self.get_openai_client().realtime.calls.hangup(self.call_id), 5.0
                )
            except Exception as exc:
                self.log.warning("hangup through OpenAI failed: %s", describe(exc))
        await super()._finish(reason, error)
