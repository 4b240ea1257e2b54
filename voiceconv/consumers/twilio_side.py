"""The Twilio side of the consumer: its own receive loop, the handshake, Twilio's frames, and
the channel layer's control messages.

The loop hands every ``websocket.receive`` text frame straight to the core instead of through
Channels' per-message task and database hop: per 20 ms frame there is one JSON parse, one
string build and one send.
"""

from __future__ import annotations

import asyncio
import logging
from time import perf_counter_ns
from typing import Any

from asgiref.typing import WebSocketDisconnectEvent
from channels.exceptions import StopConsumer
from channels.layers import get_channel_layer

from voiceconv import security
from voiceconv.conf import voiceconv_settings
from voiceconv.consumers.base import (
    LAYER_STOP_WAIT,
    MAX_TIMINGS,
    ConsumerBase,
    describe,
    logger,
)
from voiceconv.layers import redis_timeout_problem


class TwilioSide(ConsumerBase):
    """The receive loop and the Twilio socket's events."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Channels' consumer entry, with a receive loop that does not hop per frame."""
        self.scope = scope
        self.base_send = send
        # None when no layer is configured, as in Channels' own consumers (typed without None).
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
            self.log.debug("channel layer loop ended with %s", describe(error))

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
                             failures, describe(exc))
                await asyncio.sleep(1.0)
                continue
            failures = 0
            try:
                await self.dispatch(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.warning("control message %r failed: %s", message.get("type"),
                                 describe(exc))

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
        """One Twilio text frame: the core validates it; media takes the fast path.

        One frame in ``LATENCY_SAMPLE_FRAMES`` is timed, from here to its send to OpenAI
        returning (kept for voiceconv.metrics); every other frame costs one decrement.
        """
        self.sample_countdown -= 1
        started = perf_counter_ns() if self.sample_countdown <= 0 else 0
        session = self.session
        try:
            out = session.receive_twilio(text)
        except Exception as exc:  # the core guards shapes itself; this is the safety net
            await self.run_actions(session.refuse("unhandled", describe(exc)))
            return
        if isinstance(out, str):
            if out:
                try:
                    # No backend while the session reopens: the except below requeues the audio.
                    await self.backend.send(out)  # type: ignore[union-attr]
                except Exception:  # the connection is going: the realtime loop reopens it
                    session.requeue_audio(out)
                    return
                if started:
                    self._frame_timed(started)
            return
        await self.run_actions(out)

    def _frame_timed(self, started: int) -> None:
        """A sampled caller frame reached OpenAI: keep its added latency (ns)."""
        self.sample_countdown = self.sample_every
        if len(self.added_latency_ns) < MAX_TIMINGS:
            self.added_latency_ns.append(perf_counter_ns() - started)



_layer_mistake_reported = False


def _report_layer_mistake(problem: str) -> None:
    global _layer_mistake_reported
    _layer_mistake_reported = True
    logger.error("channel layer misconfigured: %s", problem)
