"""``MediaStreamConsumer``: the thin I/O adapter between Twilio and the Realtime API.

It keeps the Channels contract (scope, channel layer, ``websocket_connect`` /
``websocket_disconnect`` handlers, group messages), but hands every ``websocket.receive``
text frame straight to its own code instead of through Channels' per-message task and
database hop: per 20 ms frame there is one JSON parse, one string build and one send.

Everything with state, and every rule of the conversation, lives in
:class:`voiceconv.session.CallSession`; this module only runs the actions it returns.
Database writes, signals, callbacks and tools run in tasks of their own and can never stall
or drop audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, assert_never, cast

from asgiref.sync import sync_to_async
from asgiref.typing import WebSocketCloseEvent, WebSocketDisconnectEvent
from channels.db import DatabaseSyncToAsync
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.db import DatabaseError
from django.utils import timezone

from voiceconv import active_calls, security
from voiceconv.calllog import CallLog
from voiceconv.capabilities import capabilities
from voiceconv.conf import voiceconv_settings
from voiceconv.events import CallInfo
from voiceconv.gpt_live import OpenAILiveBackend, build_live_session, opening_clip_for
from voiceconv.layers import redis_timeout_problem
from voiceconv.realtime import (
    OpenAIRealtimeBackend,
    RealtimeBackend,
    build_session_config,
    create_response_enabled,
    default_openai_client,
    interrupt_response_enabled,
    server_idle_timeout,
    session_model,
)
from voiceconv.session import (
    Action,
    ApologyHeard,
    ArmHangupDeadline,
    CallSession,
    CloseStream,
    EndCall,
    FlushEarlyAudio,
    HangUp,
    Limits,
    Log,
    RecordFirstAudio,
    RecordMilestone,
    RecordSessionSeconds,
    RecordTurn,
    RecordUsage,
    RunTools,
    SendToRealtime,
    SendToTwilio,
    StartStream,
    StreamStart,
    ToolCall,
    ToolOutcome,
    Transfer,
    dumps,
)
from voiceconv.session.control import TOOL_CANCELLED_OUTPUT
from voiceconv.session.live_side import LiveCallSession
from voiceconv.session.messages import apology_frames

#: Seconds a GPT-Live session may take to confirm its close (``session.closed``).
LIVE_CLOSE_WAIT = 1.0

#: The speech backends an agent chooses from (``Agent.backend``).
REALTIME = "realtime"
GPT_LIVE = "gpt-live"

logger = logging.getLogger("voiceconv.consumers")

#: Longest wait at the end of a call for transcripts of the caller's last words (seconds).
LAST_TRANSCRIPT_WAIT = 0.7
#: Longest wait at the end of a call for the control-message loop to stop (seconds).
LAYER_STOP_WAIT = 2.0
APOLOGY_AUDIO = Path(__file__).parent / "data" / "apology.ulaw"


class MediaStreamConsumer(AsyncWebsocketConsumer):
    """One Twilio media stream ⇄ one Realtime session.

    Subclass and override the hooks (``get_session_config``, ``get_instructions``,
    ``get_greeting``, ``get_state``, ``get_openai_client``, ``get_backend``, ``get_tools``,
    ``on_user_message``, ``on_assistant_message``) for full control; route the subclass with
    ``YourConsumer.as_asgi()``. Collaborators can also be injected as ``as_asgi`` keywords.
    """

    #: Live calls in this process (for the concurrency limit and graceful shutdown).
    live: ClassVar[set[MediaStreamConsumer]] = active_calls.LIVE

    def __init__(
        self,
        *args: Any,
        backend_factory: Callable[[MediaStreamConsumer], RealtimeBackend] | None = None,
        recorder_class: type | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.backend_factory = backend_factory
        self.recorder_class = recorder_class
        self.session = CallSession()
        self.backend: RealtimeBackend | None = None
        self.recorder: Any = None
        self.info: CallInfo | None = None
        self.state: dict[str, Any] = {}
        self.tools: dict[str, Any] = {}
        self.agent: Any = None
        self.session_config: dict[str, Any] = {}
        #: The speech backend of the call (``get_backend_name``), known once it is claimed.
        self.backend_name = REALTIME
        #: Outbound calls, answering machines, recording (voiceconv.telephony.CallTelephony).
        self.telephony: Any = None
        #: The warm transfer in progress (voiceconv.models.WarmTransfer), None without one.
        self.warm_transfer: Any = None
        self.log = CallLog(logger)
        self._realtime_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._finished: asyncio.Future[None] | None = None
        self._closed = False
        self._layer_stopping = False
        self._end_reason: str | None = None
        #: New Realtime sessions opened after a drop (voiceconv.metrics reads it).
        self.reconnects = 0
        self._send_text: Callable[[str], Awaitable[None]] | None = None
        self._apology_mark: asyncio.Event | None = None

    # ------------------------------------------------------------------ class helpers

    @classmethod
    def active_calls(cls) -> int:
        """Calls in progress in this process."""
        return active_calls.count()

    # ------------------------------------------------------------------ the receive loop

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Channels' consumer entry, with a receive loop that does not hop per frame."""
        self.scope = scope
        self.base_send = send
        # None when no layer is configured, as in Channels' own consumers.
        self.channel_layer = get_channel_layer(self.channel_layer_alias)  # type: ignore[assignment]
        layer_task: asyncio.Task[None] | None = None
        if self.channel_layer is not None:
            self.channel_name = await self.channel_layer.new_channel()
            layer_task = asyncio.create_task(self._layer_loop())

        async def send_text(text: str) -> None:
            await send({"type": "websocket.send", "text": text})

        self._send_text = send_text
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.receive":
                    text = message.get("text")
                    if text is not None:
                        await self.receive_frame(text)
                    else:
                        await self.run_actions(self.session.refuse(
                            "binary frame", "binary frames are not part of the protocol"))
                else:
                    await self.dispatch(message)
        except StopConsumer:
            pass
        except asyncio.CancelledError:
            # The server is shutting down (daphne cancels every application on SIGTERM):
            # finalise the call below, with everything said so far written.
            if self._end_reason is None:
                self._end_reason = "shutdown"
                self.log.warning("server shutting down: ending the call")
        finally:
            if layer_task is not None:
                await self._stop_layer_loop(layer_task)
            await self._finish_uncancellable(self._end_reason or "caller_hung_up")

    async def _stop_layer_loop(self, task: asyncio.Task[None]) -> None:
        """Stop the control-message loop, waiting for it at most ``LAYER_STOP_WAIT``.

        The Redis client can swallow a cancellation that meets its own read timeout; the loop
        then sees the stop flag at its next turn. Finishing the call never waits on it longer.
        """
        self._layer_stopping = True
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=LAYER_STOP_WAIT)
        if not done:
            self.log.warning("channel layer receive did not stop within %s s; going on "
                             "(it stops at its next turn)", LAYER_STOP_WAIT)
            task.cancel()
        elif not task.cancelled() and (error := task.exception()) is not None:
            self.log.debug("channel layer loop ended with %s", _describe(error))

    async def _finish_uncancellable(self, reason: str) -> None:
        """Finish the call even if the server cancels us meanwhile (shutdown, or its close
        timeout): the records must be written first.

        The cancellation is absorbed, not re-raised: daphne waits for its applications at
        shutdown with ``asyncio.gather``, which gives up on all of them as soon as one ends
        cancelled, and the process would exit under the calls still writing their records.
        """
        finishing = asyncio.ensure_future(self.finish(reason))
        cancelled = False
        while not finishing.done():
            try:
                await asyncio.shield(finishing)
            except asyncio.CancelledError:
                if not cancelled:
                    self.log.info("cancelled by the server while finishing; finishing first")
                cancelled = True
        finishing.result()

    async def _layer_loop(self) -> None:
        """Control messages from the channel layer; a layer hiccup never touches the call."""
        assert self.channel_layer is not None
        failures = 0
        while not self._layer_stopping:
            try:
                message = await self.channel_layer.receive(self.channel_name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                problem = redis_timeout_problem(self.channel_layer)
                if problem is not None:
                    # A configuration mistake, not a passing failure: said once per process
                    # (and by the system check voiceconv.W024), not every few seconds.
                    if not _layer_mistake_reported:
                        _report_layer_mistake(problem)
                    level = logging.DEBUG
                # A blocking receive can time out now and then: only a run of them is news.
                elif failures == 3 or failures % 60 == 0:
                    level = logging.WARNING
                else:
                    level = logging.INFO
                self.log.log(level, "channel layer receive failed (%d in a row): %s; retrying",
                             failures, _describe(exc))
                await asyncio.sleep(1.0)
                continue
            failures = 0
            try:
                await self.dispatch(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.warning("control message %r failed: %s", message.get("type"),
                                 _describe(exc))

    # ------------------------------------------------------------------ websocket events

    async def connect(self) -> None:
        """Channels' connect hook: check the handshake, accept, and wait for ``start``.

        With signature checks on, an upgrade must carry a valid ``X-Twilio-Signature``
        (``ALLOW_UNSIGNED_STREAMS`` lets one without the header in, for proxies that strip it).
        """
        if security.signature_checks_enabled():
            signed = any(name == b"x-twilio-signature" for name, _ in self.scope.get("headers", []))
            if not signed and not voiceconv_settings.ALLOW_UNSIGNED_STREAMS:
                logger.warning("stream handshake refused: no x-twilio-signature")
                await self.close()
                return
            if signed and not security.validate_websocket_signature(
                self.scope, self.public_origin()
            ):
                logger.warning("stream handshake refused: invalid x-twilio-signature")
                await self.close()
                return
        await self.accept()
        self.spawn(self._start_deadline())

    async def _start_deadline(self) -> None:
        """A stream that never sends ``start`` is closed (it holds a socket and a slot)."""
        await asyncio.sleep(voiceconv_settings.timeouts.stream_start)
        if not self.session.state.started and not self._closed:
            self.log.warning("no start message within %s s: closing the stream",
                             voiceconv_settings.STREAM_START_TIMEOUT)
            self._end_reason = "refused"
            await self.close(code=4408)

    async def websocket_disconnect(self, message: WebSocketDisconnectEvent) -> None:
        """Call the :meth:`disconnect` hook and stop (no database hop: the call's records
        are written by its own writer)."""
        await self.disconnect(int(message.get("code") or 1005))
        raise StopConsumer()

    async def disconnect(self, code: int) -> None:
        """Channels' disconnect hook: Twilio (or the server) closed the socket."""
        self._closed = True
        if self._end_reason is None:
            # 1012 (service restart): the server itself is closing connections (uvicorn's
            # graceful shutdown); a stream closed after our transfer was handed to Twilio is
            # that transfer; anything else is Twilio ending the stream.
            st = self.session.state
            if code == 1012:
                self._end_reason = "shutdown"
            elif st.ended and st.transfer_target is not None:
                self._end_reason = "transferred"
            else:
                self._end_reason = "caller_hung_up"

    def public_origin(self) -> str:
        """The public origin, derived as the webhooks derive it (:func:`security.public_origin`)."""
        return security.public_origin(self.scope)

    # ------------------------------------------------------------------ Twilio frames

    async def receive_frame(self, text: str) -> None:
        """One Twilio text frame: the core validates it; media takes the fast path."""
        session = self.session
        try:
            out = session.receive_twilio(text)
        except Exception as exc:  # the core guards shapes itself; this is the safety net
            await self.run_actions(session.refuse("unhandled", _describe(exc)))
            return
        if isinstance(out, str):
            if out:
                try:
                    await self.backend.send(out)  # type: ignore[union-attr]
                except Exception:  # the connection is going: the realtime loop reopens it
                    session.requeue_audio(out)
            return
        await self.run_actions(out)

    # ------------------------------------------------------------------ call start

    async def handle_start(self, start: StreamStart) -> None:
        """The stream started: check its token, claim the call, then configure the core."""
        call_sid = start.call_sid
        params = start.custom_parameters
        self.log = CallLog(logger, call_sid)
        problem = self.start_refusal(start)
        if problem:
            self.log.warning("stream refused: %s", problem)
            self._end_reason = "refused"
            await self.close(code=4403)
            return
        self.info = CallInfo(
            call_sid=call_sid,
            stream_sid=start.stream_sid,
            account_sid=start.account_sid,
            from_number=str(params.get("from", "")),
            to_number=str(params.get("to", "")),
            direction=str(params.get("direction", "")),
            custom_parameters={k: v for k, v in params.items() if k != "call_token"},
        )
        claim = await self.claim_call()
        if claim is not None:
            self.log.warning("stream refused: %s", claim)
            self._end_reason = "refused"
            await self.close(code=4409)
            return
        MediaStreamConsumer.live.add(self)
        self.state = self.get_state()
        self.backend_name = self.get_backend_name()
        common: dict[str, Any] = dict(
            greeting=self.get_greeting(),
            forward_dtmf=voiceconv_settings.FORWARD_DTMF,
            dtmf_template=voiceconv_settings.DTMF_TEMPLATE,
            early_audio_frames=max(1, voiceconv_settings.limits.early_audio_ms // 20),
            dtmf_pause_ms=voiceconv_settings.limits.dtmf_pause_ms,
            limits=self.get_limits(),
        )
        if self.backend_name == GPT_LIVE:
            # The Live part of the core takes over the call (its stream has started).
            self.session_config = self.get_live_session_config()
            self.session = LiveCallSession.adopt(
                self.session, gap_ms=int(voiceconv_settings.GPT_LIVE_TURN_GAP_MS),
                opening_clip=opening_clip_for(self.agent),
            )
            self.session.configure(
                instructions=str(self.session_config.get("instructions") or ""),
                interrupt_response=True, auto_response=True, transcription=False, **common,
            )
        else:
            self.session_config = self.get_session_config()
            self.session.configure(
                instructions=str(self.session_config.get("instructions") or ""),
                interrupt_response=interrupt_response_enabled(self.session_config),
                auto_response=create_response_enabled(self.session_config),
                greeting_reasoning_effort=self.get_greeting_reasoning_effort(),
                server_idle_timeout=server_idle_timeout(self.session_config),
                transcription=bool(
                    ((self.session_config.get("audio") or {}).get("input") or {})
                    .get("transcription")
                ),
                **common,
            )
        self.recorder = self.make_recorder()
        if self.recorder is not None:
            self.recorder.start()
            self.recorder.stream_started(timezone.now())
        if self.channel_layer is not None:
            try:
                await self.channel_layer.group_add(self.group_name(call_sid), self.channel_name)
            except Exception:
                self.log.exception("could not join the call's control group")
        self.telephony = await self.start_telephony()
        self._realtime_task = asyncio.create_task(self.realtime_loop())
        if self.telephony is not None:
            self.spawn(self.telephony.after_start())
        self.log.info("stream %s started (agent %s)", start.stream_sid, self.info.agent_pk)

    def start_refusal(self, start: StreamStart) -> str | None:
        """Why this stream may not start, or None: Twilio's per-call stream token.

        The one authentication hook of the stream; the browser softphone's consumer, whose
        users were checked at the handshake, overrides it.
        """
        if not voiceconv_settings.REQUIRE_STREAM_TOKEN:
            return None
        token = str(start.custom_parameters.get("call_token", ""))
        return security.check_stream_token(token, start.call_sid)

    @staticmethod
    def group_name(call_sid: str) -> str:
        """Channel-layer group for controlling a live call from anywhere."""
        return "voiceconv.call." + "".join(c for c in call_sid if c.isalnum())[:80]

    async def claim_call(self) -> str | None:
        """Load the call's agent and tools, and claim the call for this stream.

        Returns the reason to refuse the stream (another live stream has the call), or None.
        The work runs in a thread of its own (not the single thread shared by every
        ``sync_to_async`` call in the process) and within ``START_DATABASE_TIMEOUT``: a
        database that cannot be reached, or hangs, does not stop the call nor any other: it
        goes on with the default configuration.
        """
        assert self.info is not None
        timeout = voiceconv_settings.timeouts.start_database
        work = DatabaseSyncToAsync(self._claim_call_sync, thread_sensitive=False)
        try:
            claim = await asyncio.wait_for(work(), timeout)
        except DatabaseError:
            self.log.exception("database unavailable at stream start; using defaults")
            return None
        except TimeoutError:
            self.log.error("database did not answer within %s s at stream start; "
                           "going on with the defaults and no tools", timeout)
            return None
        if isinstance(claim, str):
            return claim
        call_pk, agent, tools = claim
        self.info.call_pk = call_pk
        self.agent = agent
        self.info.agent_pk = agent.pk if agent is not None else None
        self.tools = tools
        return None

    def _claim_call_sync(self) -> str | tuple[int, Any, dict[str, Any]]:
        # Imported here, not at the top: the models need Django's app registry, and this module is
        # importable before it is ready.
        from voiceconv.models import Call

        assert self.info is not None
        claim = Call.objects.claim_stream(self.info)
        if isinstance(claim, str):
            return claim
        call, agent = claim
        self.agent = agent  # get_tools() reads it
        return call.pk, agent, self.get_tools()

    # ------------------------------------------------------------------ hooks

    def get_state(self) -> dict[str, Any]:
        """The mutable per-call state handed to tools as ``state``."""
        assert self.info is not None
        return {"call_sid": self.info.call_sid, **self.info.custom_parameters}

    def get_overrides(self) -> dict[str, Any]:
        """Session options of the call's agent (over the VOICECONV defaults)."""
        if self.agent is None:
            return {}
        return dict(self.agent.session_overrides())

    def get_instructions(self, overrides: dict[str, Any]) -> str | None:
        """Override to compute instructions per call (None = agent or setting)."""
        return None

    def get_greeting(self) -> str:
        """What the agent is asked to say first ("" = wait for the caller)."""
        greeting = self.get_overrides().get("greeting")
        if greeting is None:
            greeting = voiceconv_settings.GREETING
        return str(greeting or "")

    def get_greeting_reasoning_effort(self) -> str | None:
        """``reasoning.effort`` of the greeting's response (None = the session's); only for
        models that reason."""
        overrides = self.get_overrides()
        effort = overrides.get("greeting_reasoning_effort")
        effort = effort or voiceconv_settings.GREETING_REASONING_EFFORT
        if not effort or not capabilities(session_model(overrides)).reasoning:
            return None
        return str(effort)

    def get_tools(self) -> dict[str, Any]:
        """The tools offered to the model (runs in a thread at call start; may use the DB)."""
        # Imported here, not at the top: the models need Django's app registry, and this module is
        # importable before it is ready.
        from voiceconv.tools.binding import tools_for_agent

        return dict(tools_for_agent(self.agent))

    def get_session_config(self) -> dict[str, Any]:
        """The GA ``session`` object sent with ``session.update``."""
        overrides = self.get_overrides()
        instructions = self.get_instructions(overrides)
        if instructions is not None:
            overrides["instructions"] = instructions
        definitions = [t.definition() for t in self.tools.values()]
        return build_session_config(overrides, definitions)

    def get_backend_name(self) -> str:
        """The speech backend of this call: ``"realtime"`` or ``"gpt-live"`` (the agent's)."""
        return str(getattr(self.agent, "backend", "") or REALTIME)

    def get_live_session_config(self) -> dict[str, Any]:
        """The ``session`` object of GPT-Live's ``session.start``."""
        overrides = dict(self.agent.live_overrides()) if self.agent is not None else {}
        instructions = self.get_instructions(overrides)
        if instructions is not None:
            overrides["instructions"] = instructions
        definitions = [t.definition() for t in self.tools.values()]
        return build_live_session(overrides, definitions)

    def first_events(self, reconnect: bool) -> list[str]:
        """What a new speech session is sent first (its configuration; after a drop, the
        conversation so far)."""
        session = self.session
        if isinstance(session, LiveCallSession):
            return [session.start_event(self.session_config)]
        events = [dumps({"type": "session.update", "session": self.session_config})]
        if reconnect:
            events.extend(session.reseed_events())
        return events

    def get_limits(self) -> Limits:
        """Call-length and idle-caller limits (from the VOICECONV settings)."""
        lim = voiceconv_settings.limits
        return Limits(
            max_call_ms=lim.max_call_ms,
            warning_ms=lim.end_warning_ms,
            idle_reprompt_ms=lim.idle_reprompt_ms,
            idle_hangup_ms=lim.idle_hangup_ms,
        )

    def get_model(self) -> str:
        return session_model(self.get_overrides())

    def get_openai_client(self) -> Any:
        """The ``openai.AsyncOpenAI`` client (honours OPENAI_API_KEY and OPENAI_BASE_URL)."""
        return default_openai_client()

    def get_backend(self) -> RealtimeBackend:
        """The speech backend for this call."""
        if self.backend_factory is not None:
            return self.backend_factory(self)
        if self.backend_name == GPT_LIVE:
            return OpenAILiveBackend(self.get_openai_client())
        return OpenAIRealtimeBackend(self.get_openai_client(), self.get_model())

    def make_recorder(self) -> Any:
        """The call's writer (persistence, signals, callbacks), off the audio path."""
        assert self.info is not None
        cls = self.recorder_class
        if cls is None:
            # Imported here, not at the top: the models need Django's app registry, and this module
            # is importable before it is ready.
            from voiceconv.recorder import CallRecorder

            cls = CallRecorder
        return cls(
            self.info,
            sender=type(self),
            context=self,
            on_user_message=self.on_user_message or voiceconv_settings.ON_USER_MESSAGE,
            on_assistant_message=self.on_assistant_message
            or voiceconv_settings.ON_ASSISTANT_MESSAGE,
        )

    #: Callables ``fn(text, info)`` (sync or async) run for every finished turn, off the
    #: audio path. Set on a subclass, or through the VOICECONV settings of the same name.
    on_user_message: Callable[..., Any] | None = None
    on_assistant_message: Callable[..., Any] | None = None

    # ------------------------------------------------------------------ the OpenAI side

    async def realtime_loop(self) -> None:
        """Open the Realtime session and pump its events; reopen it if it drops mid-call.

        A failure to open the first session ends the call with a spoken apology. A session
        lost mid-call (a dropped socket, the 60-minute session limit) is replaced by a new
        one, re-seeded with the conversation so far; caller audio is buffered meanwhile.
        """
        session = self.session
        attempts = voiceconv_settings.REALTIME_RECONNECT_ATTEMPTS
        failures = 0
        first = True
        while True:
            backend = self.get_backend()
            try:
                await asyncio.wait_for(
                    backend.connect(), voiceconv_settings.timeouts.connect
                )
                for event in self.first_events(reconnect=not first):
                    await backend.send(event)
            except asyncio.CancelledError:
                await _close_quietly(backend)
                raise
            except Exception as exc:
                await _close_quietly(backend)
                failures += 1
                if first or failures >= attempts:
                    self.log.error("could not open the Realtime session: %s", _describe(exc))
                    await self.fail("openai_error", f"connect failed: {_describe(exc)}")
                    return
                self.log.warning("reconnect attempt %d of %d failed: %s", failures, attempts,
                                 _describe(exc))
                await asyncio.sleep(min(2.0, 0.25 * 2 ** (failures - 1)))
                continue
            self.backend = backend
            watchdog = self.spawn(self._ready_watchdog(backend))
            try:
                await self._pump(backend)
                reason = "closed by the server"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = _describe(exc)
            finally:
                watchdog.cancel()
            if self._end_reason is not None:
                return
            self.backend = None
            was_ready = session.state.realtime_ready
            await self.run_actions(session.realtime_lost())
            await _close_quietly(backend)
            if not was_ready and first:
                await self.fail("openai_error", f"Realtime session failed to start: {reason}")
                return
            first = False
            # REALTIME_RECONNECT_ATTEMPTS = N: up to N attempts after each loss (0: none).
            failures = 0 if was_ready else failures + 1
            if failures >= attempts:
                await self.fail("openai_error", f"Realtime connection lost: {reason}")
                return
            self.log.warning("Realtime connection lost (%s); opening a new session", reason)
            self.reconnects += 1  # read by voiceconv.metrics

    async def _ready_watchdog(self, backend: RealtimeBackend) -> None:
        """End the call if the session never becomes ready (OpenAI stalls at start)."""
        await asyncio.sleep(voiceconv_settings.timeouts.connect)
        if not self.session.state.realtime_ready and self.backend is backend:
            self.log.error("no session.updated within %s s", voiceconv_settings.CONNECT_TIMEOUT)
            await backend.close()

    async def _pump(self, backend: RealtimeBackend) -> None:
        """Turn Realtime events into actions until the connection ends (then raise)."""
        session = self.session
        send_text = self._send_text
        assert send_text is not None
        receive = session.receive_realtime
        while True:
            data = await backend.recv()
            try:
                out = receive(data)
            except Exception as exc:  # the core guards shapes itself; this is the safety net
                self.log.warning("Realtime event could not be handled: %s", _describe(exc))
                continue
            if isinstance(out, tuple):
                await send_text(out[0])
                await send_text(out[1])
            elif out:
                await self.run_actions(out)

    # ------------------------------------------------------------------ actions

    async def run_actions(self, actions: Iterable[Action]) -> None:
        """Run what the core asked for, in order."""
        for action in actions:
            match action:
                case SendToTwilio(text=text):
                    await self._twilio_send(text)
                case SendToRealtime(text=text):
                    if self.backend is not None:
                        try:
                            await self.backend.send(text)
                        except Exception as exc:
                            self.log.warning("could not send to Realtime: %s", _describe(exc))
                case RecordTurn(turn=turn):
                    if self.recorder is not None:
                        self.recorder.turn(turn)
                case RecordUsage(usage=usage):
                    if self.recorder is not None:
                        self.recorder.usage(usage)
                case RecordSessionSeconds(seconds=seconds, paused_seconds=paused):
                    if self.recorder is not None:
                        self.recorder.session_seconds(seconds, paused)
                case RecordFirstAudio():
                    if self.recorder is not None:
                        self.recorder.first_audio(timezone.now())
                case RecordMilestone(name=name):
                    if self.recorder is not None:
                        self.recorder.milestone(name, timezone.now())
                case RunTools(calls=calls):
                    self.spawn(self.run_tools(calls))
                case StartStream(start=start):
                    await self.handle_start(start)
                case CloseStream(code=code):
                    await self.close(code=code)
                case HangUp(reason=reason):
                    self.spawn(self.hang_up(reason))
                case ArmHangupDeadline():
                    self.spawn(self._hangup_deadline())
                case Transfer(target=target):
                    self.spawn(self.transfer(target))
                case EndCall(reason=reason, error=error, apologise=apologise):
                    self.spawn(self.fail(reason, error) if apologise else self.end(reason, error))
                case FlushEarlyAudio():
                    await self.run_actions(self.session.early_audio_sent())
                case ApologyHeard():
                    if self._apology_mark is not None:
                        self._apology_mark.set()
                case Log(level=level, message=message):
                    getattr(self.log, level)(message)
                case _:
                    assert_never(action)

    async def _twilio_send(self, text: str) -> None:
        if self._closed or self._send_text is None:
            return
        try:
            await self._send_text(text)
        except Exception as exc:
            self._closed = True
            self.log.info("Twilio socket gone: %s", _describe(exc))

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a task owned by this call (awaited or cancelled at the end)."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("call task failed", exc_info=task.exception())

    # ------------------------------------------------------------------ tools

    async def run_tools(self, calls: tuple[ToolCall, ...]) -> None:
        """Fan out the response's function calls; fan in with one response.create."""
        from voiceconv.tools.runtime import ToolContext, execute_tool_call

        session = self.session
        assert self.info is not None
        context = ToolContext(
            state=self.state,
            connection=getattr(self.backend, "connection", None),
            call=self.info,
            control=_Control(self),
        )
        started_at = timezone.now()
        self.log.info("running %s", ", ".join(f"{c.name} ({c.call_id})" for c in calls))
        jobs = [asyncio.ensure_future(execute_tool_call(c, self.tools, context)) for c in calls]
        try:
            holding = [self.tools[c.name].holding_message for c in calls if c.name in self.tools]
            holding = [h for h in holding if h]
            if holding:
                delay = voiceconv_settings.timeouts.tool_holding
                done, _ = await asyncio.wait(jobs, timeout=delay)
                if len(done) < len(jobs):
                    await self.run_actions(session.holding_line(holding[0]))
            results = await asyncio.gather(*jobs)
        except asyncio.CancelledError:
            # The call ends while tools run: each invocation is still recorded, with its
            # outcome, or as cancelled.
            for job in jobs:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
            self._record_cancelled_tools(calls, jobs, started_at)
            raise
        if self.recorder is not None:
            for result in results:
                self.recorder.tool_invocation(result)
        await self.run_actions(session.tool_results([
            ToolOutcome(r.call_id, r.name, r.arguments, r.output, r.error) for r in results
        ]))

    def _record_cancelled_tools(
        self, calls: tuple[ToolCall, ...], jobs: Sequence[asyncio.Future[Any]], started_at: Any
    ) -> None:
        """The call ended while these tools ran: each invocation is recorded with its outcome
        (``cancelled`` for one cut short), and the core records its transcript entry."""
        from voiceconv.tools.runtime import ToolResult

        elapsed = int((timezone.now() - started_at).total_seconds() * 1000)
        results: list[ToolResult] = []
        for call, job in zip(calls, jobs, strict=True):
            if job.done() and not job.cancelled() and job.exception() is None:
                results.append(job.result())
                continue
            results.append(ToolResult(
                call_id=call.call_id, name=call.name, arguments=call.arguments,
                output=TOOL_CANCELLED_OUTPUT, started_at=started_at, duration_ms=elapsed,
                error="cancelled",
            ))
        self.log.info("call ended while %d tool call(s) ran: recorded as %s", len(results),
                      ", ".join(f"{r.name} {r.error or 'ok'}" for r in results))
        turns = self.session.tools_ended([
            ToolOutcome(r.call_id, r.name, r.arguments, r.output, r.error) for r in results
        ])
        if self.recorder is None:
            return
        for result in results:
            self.recorder.tool_invocation(result)
        for action in turns:
            if isinstance(action, RecordTurn):
                self.recorder.turn(action.turn)

    # ------------------------------------------------------------------ control

    async def request_hangup(self, reason: str = "agent_ended") -> None:
        if not self.session.state.started:
            return
        await self.run_actions(self.session.request_hangup(reason))

    def transfer_refusal(self, target: str) -> str | None:
        """Why a transfer to ``target`` is refused (not a valid target, or not on the agent's
        allow-list), in words the model can say; None when it may go ahead."""
        from voiceconv.exceptions import InvalidPhoneNumberError
        from voiceconv.phone import transfer_target

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
        from voiceconv import twilio_rest

        try:
            await sync_to_async(twilio_rest.transfer_call, thread_sensitive=False)(
                self.info.call_sid, target
            )
        except Exception as exc:
            self.log.error("transfer to %s failed: %s", target, _describe(exc))
            await self.end("error", f"transfer to {target} failed: {_describe(exc)}")
            return
        self.log.info("transferred to %s", target)
        await self.end("transferred")

    async def voiceconv_hangup(self, message: dict[str, Any]) -> None:
        """Channel-layer control: ``{"type": "voiceconv.hangup"}`` to the call's group."""
        await self.request_hangup(str(message.get("reason") or "agent_ended"))

    async def start_telephony(self) -> Any:
        """The call's :class:`voiceconv.telephony.CallTelephony` (None: no telephony)."""
        from voiceconv.telephony import CallTelephony

        return await CallTelephony.start(self)

    async def voiceconv_warm_transfer(self, message: dict[str, Any]) -> None:
        """The status of a warm transfer's human leg (voiceconv.warm_transfer)."""
        from voiceconv import warm_transfer

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
        from voiceconv import live_control

        await live_control.handle(self, message)

    # ------------------------------------------------------------------ the end

    async def fail(self, reason: str, error: str) -> None:
        """The call cannot go on: apologise where possible, then end it with the reason."""
        if self._end_reason is not None:
            return
        self._end_reason = reason
        await self.play_apology()
        await self.end(reason, error)

    async def play_apology(self) -> None:
        """Play the bundled apology clip and wait (bounded) until it has been heard."""
        if self._closed or not self.session.state.stream_sid:
            return
        path = voiceconv_settings.APOLOGY_AUDIO or APOLOGY_AUDIO
        try:
            audio = Path(path).read_bytes()
        except OSError as exc:
            self.log.error("apology audio unreadable: %s", _describe(exc))
            return
        self._apology_mark = asyncio.Event()
        for frame in apology_frames(self.session.state.stream_sid, audio):
            await self._twilio_send(frame)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._apology_mark.wait(), len(audio) / 8000 + 2.0)

    async def end(self, reason: str, error: str = "") -> None:
        """End the call now: close both sockets and finalise the record."""
        if self._end_reason is None:
            self._end_reason = reason
        await self.finish(self._end_reason, error)

    async def finish(self, reason: str, error: str = "") -> None:
        """Tear down once: close OpenAI, close Twilio, flush every record. Idempotent."""
        if self._finished is not None:
            await asyncio.shield(self._finished)
            return
        loop = asyncio.get_running_loop()
        self._finished = loop.create_future()
        try:
            await self._finish(reason, error)
        finally:
            self._finished.set_result(None)

    async def _await_last_transcripts(self) -> None:
        """The caller's last words may still be being transcribed: wait briefly for them
        (the Realtime socket stays open, well within a second), so they are not lost."""
        session = self.session
        task = self._realtime_task
        if self.backend is None or task is None or task.done():
            return
        deadline = asyncio.get_running_loop().time() + LAST_TRANSCRIPT_WAIT
        while session.pending_transcripts and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)

    async def _close_live_session(self) -> None:
        """GPT-Live: ask the session to close and wait briefly for ``session.closed`` (its
        final usage) while the socket is still read."""
        task = self._realtime_task
        if not isinstance(self.session, LiveCallSession) or self.backend is None:
            return
        if task is None or task.done() or task is asyncio.current_task():
            return
        try:
            await self.backend.send('{"type":"session.close"}')
            await asyncio.wait_for(asyncio.shield(task), LIVE_CLOSE_WAIT)
        except Exception as exc:  # a timeout, or a socket already gone
            self.log.debug("GPT-Live session not closed cleanly: %s", _describe(exc))

    async def _finish(self, reason: str, error: str) -> None:
        MediaStreamConsumer.live.discard(self)
        current = asyncio.current_task()
        await self._await_last_transcripts()
        await self._close_live_session()
        if self._realtime_task is not None and self._realtime_task is not current:
            self._realtime_task.cancel()
            await asyncio.gather(self._realtime_task, return_exceptions=True)
        if self.backend is not None:
            try:
                await asyncio.wait_for(self.backend.close(), 1.0)
            except Exception as exc:
                self.log.debug("closing Realtime: %s", _describe(exc))
        if not self._closed:
            self._closed = True
            with contextlib.suppress(Exception):
                await self.base_send(
                    cast("WebSocketCloseEvent", {"type": "websocket.close", "code": 1000})
                )
        others = [t for t in self._tasks if t is not current]
        for task in others:
            task.cancel()
        if others:
            await asyncio.gather(*others, return_exceptions=True)
        if self.warm_transfer is not None:
            from voiceconv import warm_transfer

            await warm_transfer.abandon(self, reason)
        if self.recorder is not None:
            for action in self.session.finish():
                if isinstance(action, RecordTurn):
                    self.recorder.turn(action.turn)
        if self.channel_layer is not None and self.info is not None:
            with contextlib.suppress(Exception):
                await self.channel_layer.group_discard(
                    self.group_name(self.info.call_sid), self.channel_name
                )
        if self.session.bad_input:
            self.log.warning("bad input during the call: %s", self.session.bad_input)
        if self.recorder is not None:
            self.recorder.ended(reason, error=error, traceback="")
            await self.recorder.aclose()
        if self.info is not None:
            self.log.info("call ended (%s)", reason)


class _Control:
    """The ``control`` handed to tools: thread-safe requests to end or transfer the call and
    to send digits."""

    def __init__(self, consumer: MediaStreamConsumer) -> None:
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
        from voiceconv import warm_transfer

        async def begin() -> None:
            refusal = await warm_transfer.start(self._consumer, target, brief)
            if refusal:
                self._consumer.log.warning("warm transfer to %s refused: %s", target, refusal)

        self._soon(begin)

    def send_dtmf(self, digits: str) -> None:
        from voiceconv.live_control import send_dtmf

        self._soon(lambda: send_dtmf(self._consumer, digits))


async def _close_quietly(backend: RealtimeBackend) -> None:
    try:
        await asyncio.wait_for(backend.close(), 1.0)
    except Exception:
        logger.debug("closing a Realtime connection failed", exc_info=True)


def _describe(exc: BaseException) -> str:
    text = str(exc) or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}"[:500]


_layer_mistake_reported = False


def _report_layer_mistake(problem: str) -> None:
    global _layer_mistake_reported
    _layer_mistake_reported = True
    logger.error("channel layer misconfigured: %s", problem)
