"""The end of a call: the spoken apology when it cannot go on, and the one teardown (close
OpenAI, close Twilio, stop the call's tasks, write the last records), whatever ended it."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import cast

from asgiref.typing import WebSocketCloseEvent

from voiceconv import active_calls, warm_transfer
from voiceconv.conf import voiceconv_settings
from voiceconv.consumers.base import (
    APOLOGY_AUDIO,
    LAST_TRANSCRIPT_WAIT,
    LIVE_CLOSE_WAIT,
    ConsumerBase,
    describe,
)
from voiceconv.session import RecordTurn
from voiceconv.session.live_side import LiveCallSession
from voiceconv.session.messages import apology_frames


class CallEnding(ConsumerBase):
    """Apologising, and tearing the call down once."""

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
            self.log.error("apology audio unreadable: %s", describe(exc))
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
            self.log.debug("GPT-Live session not closed cleanly: %s", describe(exc))

    async def _finish(self, reason: str, error: str) -> None:
        # Out of the live calls (a new call may take its place), but a drain waits until
        # the records are handed over (active_calls.ENDING).
        active_calls.ENDING.add(self)
        self.live.discard(self)
        try:
            await self._finish_call(reason, error)
        finally:
            active_calls.ENDING.discard(self)

    async def _finish_call(self, reason: str, error: str) -> None:
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
                self.log.debug("closing Realtime: %s", describe(exc))
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

