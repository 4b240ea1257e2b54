"""The stream's ``start``: the call is claimed, its agent and tools loaded, the core configured
for its backend, and the overridable hooks that decide what the call is configured with.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from channels.db import DatabaseSyncToAsync
from django.db import DatabaseError
from django.utils import timezone

from voiceconv import security
from voiceconv.calllog import CallLog
from voiceconv.capabilities import capabilities
from voiceconv.conf import voiceconv_settings
from voiceconv.consumers.base import GPT_LIVE, REALTIME, ConsumerBase, logger
from voiceconv.events import CallInfo
from voiceconv.gpt_live import OpenAILiveBackend, build_live_session, opening_clip_for
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
from voiceconv.session import Limits, StreamStart, dumps
from voiceconv.session.live_side import LiveCallSession


class CallStart(ConsumerBase):
    """Claiming and configuring the call when its stream starts; the configuration hooks."""

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
        self.live.add(self)
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
            # The agent's opening clip is read from disk the first time (then cached): in a
            # thread, never on the event loop other calls' audio runs on.
            clip = (await asyncio.to_thread(opening_clip_for, self.agent)
                    if getattr(self.agent, "opening_clip", "") else None)
            self.session = LiveCallSession.adopt(
                self.session, gap_ms=int(voiceconv_settings.GPT_LIVE_TURN_GAP_MS),
                opening_clip=clip,
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
