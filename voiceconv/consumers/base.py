"""What every room of the media-stream consumer shares: the call's state, its tasks, and the
declarations through which one room calls another.

:class:`ConsumerBase` holds the per-call attributes (the core, the speech backend, the
recorder, the agent and tools) and the small primitives every room uses (``spawn``, sending a
text frame to Twilio). The rooms are mixins over it, composed into
:class:`voiceconv.consumers.MediaStreamConsumer`:

========================  ==============================================================
``twilio_side``           the receive loop, the handshake, Twilio frames, control messages
``start``                 the stream's ``start``: claim the call, configure the core; hooks
``speech_side``           the OpenAI session: open, pump, reopen after a drop
``actions``               the core's actions, and the tools they start
``control``               hang-up, transfer, the channel-layer control messages
``ending``                the apology, the teardown, the last records
========================  ==============================================================
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from channels.generic.websocket import AsyncWebsocketConsumer

from voiceconv import active_calls
from voiceconv.calllog import CallLog
from voiceconv.conf import voiceconv_settings
from voiceconv.events import CallInfo
from voiceconv.realtime import RealtimeBackend
from voiceconv.session import CallSession

if TYPE_CHECKING:
    from voiceconv.session import Action, Limits, StreamStart, ToolCall

#: Seconds a GPT-Live session may take to confirm its close (``session.closed``).
LIVE_CLOSE_WAIT = 1.0

#: The speech backends an agent chooses from (``Agent.backend``).
REALTIME = "realtime"
GPT_LIVE = "gpt-live"

#: One logger for the whole consumer (its records carry the call's sid, see CallLog).
logger = logging.getLogger("voiceconv.consumers")

#: Longest wait at the end of a call for transcripts of the caller's last words (seconds).
LAST_TRANSCRIPT_WAIT = 0.7
#: Longest wait at the end of a call for the control-message loop to stop (seconds).
LAYER_STOP_WAIT = 2.0
APOLOGY_AUDIO = Path(__file__).parent.parent / "data" / "apology.ulaw"
#: Most timings a call keeps between two looks of voiceconv.metrics (the rest are not kept).
MAX_TIMINGS = 1000
#: A countdown that never runs out (``LATENCY_SAMPLE_FRAMES`` 0: no frame is timed).
NEVER_SAMPLE = 1 << 62


class ConsumerBase(AsyncWebsocketConsumer):
    """The state of one call's consumer, and the primitives its rooms share."""

    #: Live calls in this process (for the concurrency limit and graceful shutdown).
    live: ClassVar[set[Any]] = active_calls.LIVE

    def __init__(
        self,
        *args: Any,
        backend_factory: Callable[[ConsumerBase], RealtimeBackend] | None = None,
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
        #: Timings in ns, kept until voiceconv.metrics observes them (at most MAX_TIMINGS):
        #: sampled caller frames (Twilio to OpenAI), barge-in reactions.
        self.added_latency_ns: list[int] = []
        self.barge_in_ns: list[int] = []
        #: ``perf_counter_ns`` when the speech event whose actions run now was handed over.
        self.event_at_ns = 0
        #: Caller frames until the next one is timed (one in ``LATENCY_SAMPLE_FRAMES``).
        every = voiceconv_settings.LATENCY_SAMPLE_FRAMES
        self.sample_every = every if every > 0 else NEVER_SAMPLE
        self.sample_countdown = self.sample_every
        self._send_text: Callable[[str], Awaitable[None]] | None = None
        self._apology_mark: asyncio.Event | None = None

    @classmethod
    def active_calls(cls) -> int:
        """Calls in progress in this process."""
        return active_calls.count()

    @staticmethod
    def group_name(call_sid: str) -> str:
        """Channel-layer group for controlling a live call from anywhere."""
        return active_calls.group_name(call_sid)

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

    async def _twilio_send(self, text: str) -> None:
        if self._closed or self._send_text is None:
            return
        try:
            await self._send_text(text)
        except Exception as exc:
            self._closed = True
            self.log.info("Twilio socket gone: %s", describe(exc))

    if TYPE_CHECKING:
        # What one room calls in another (each is defined in the room named beside it).

        def public_origin(self) -> str: ...  # twilio_side
        async def handle_start(self, start: StreamStart) -> None: ...  # start
        def get_state(self) -> dict[str, Any]: ...  # start
        def get_backend_name(self) -> str: ...  # start
        def get_greeting(self) -> str: ...  # start
        def get_greeting_reasoning_effort(self) -> str | None: ...  # start
        def get_session_config(self) -> dict[str, Any]: ...  # start
        def get_live_session_config(self) -> dict[str, Any]: ...  # start
        def get_limits(self) -> Limits: ...  # start
        def get_backend(self) -> RealtimeBackend: ...  # start
        def get_model(self) -> str: ...  # start
        def get_openai_client(self) -> Any: ...  # start
        def first_events(self, reconnect: bool) -> list[str]: ...  # start
        def make_recorder(self) -> Any: ...  # start
        async def realtime_loop(self) -> None: ...  # speech_side
        async def run_actions(self, actions: Iterable[Action]) -> None: ...  # actions
        async def run_tools(self, calls: tuple[ToolCall, ...]) -> None: ...  # actions
        async def start_telephony(self) -> Any: ...  # control
        async def request_hangup(self, reason: str = "agent_ended") -> None: ...  # control
        async def request_transfer(self, target: str) -> str | None: ...  # control
        def transfer_refusal(self, target: str) -> str | None: ...  # control
        async def hang_up(self, reason: str) -> None: ...  # control
        async def transfer(self, target: str) -> None: ...  # control
        async def _hangup_deadline(self) -> None: ...  # control
        async def fail(self, reason: str, error: str) -> None: ...  # ending
        async def end(self, reason: str, error: str = "") -> None: ...  # ending
        async def finish(self, reason: str, error: str = "") -> None: ...  # ending


async def close_quietly(backend: RealtimeBackend) -> None:
    """Close a speech connection, at most a second, whatever happens."""
    try:
        await asyncio.wait_for(backend.close(), 1.0)
    except Exception:
        logger.debug("closing a Realtime connection failed", exc_info=True)


def describe(exc: BaseException) -> str:
    """An exception as one short log phrase: its class and message."""
    text = str(exc) or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}"[:500]
