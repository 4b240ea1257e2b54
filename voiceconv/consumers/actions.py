"""The core's actions, run in order, and the tools they start.

:meth:`Actions.run_actions` is the one ``match`` over the core's action classes
(``assert_never`` keeps it complete). Tools run as tasks of the call, fanned out together and
fanned in with one answer to the model; a call that ends while they run still records each
invocation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from time import perf_counter_ns
from typing import Any, assert_never

from django.utils import timezone

from voiceconv.conf import voiceconv_settings
from voiceconv.consumers.base import MAX_TIMINGS, ConsumerBase, describe
from voiceconv.consumers.control import ToolControl
from voiceconv.session import (
    Action,
    ApologyHeard,
    ArmHangupDeadline,
    CloseStream,
    EndCall,
    FlushEarlyAudio,
    HangUp,
    Log,
    RecordBargeIn,
    RecordFirstAudio,
    RecordMilestone,
    RecordSessionSeconds,
    RecordTurn,
    RecordUsage,
    RunTools,
    SendToRealtime,
    SendToTwilio,
    StampTime,
    StartStream,
    ToolCall,
    ToolOutcome,
    Transfer,
)
from voiceconv.session.control import TOOL_CANCELLED_OUTPUT
from voiceconv.tools.runtime import ToolContext, ToolResult, execute_tool_call


class Actions(ConsumerBase):
    """Running the core's actions; the tools."""

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
                            self.log.warning("could not send to Realtime: %s", describe(exc))
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
                case RecordBargeIn():
                    # From the speech event handed over (set by the speech side's pump) to
                    # here, the clear and truncate before this action sent; kept for metrics.
                    if self.event_at_ns and len(self.barge_in_ns) < MAX_TIMINGS:
                        self.barge_in_ns.append(perf_counter_ns() - self.event_at_ns)
                case StampTime():
                    self.session.stamp(action, time.monotonic())
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

    async def run_tools(self, calls: tuple[ToolCall, ...]) -> None:
        """Fan out the response's function calls; fan in with one response.create."""
        session = self.session
        assert self.info is not None
        context = ToolContext(
            state=self.state,
            connection=getattr(self.backend, "connection", None),
            call=self.info,
            control=ToolControl(self),
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
