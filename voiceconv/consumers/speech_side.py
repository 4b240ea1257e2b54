"""The speech side of the consumer: open the OpenAI session (Realtime or GPT-Live), pump its
events into the core, and open a new one when it drops mid-call."""

from __future__ import annotations

import asyncio
from time import perf_counter_ns

from voiceconv import preconnect
from voiceconv.conf import voiceconv_settings
from voiceconv.consumers.base import REALTIME, ConsumerBase, close_quietly, describe
from voiceconv.consumers.start import CallStart
from voiceconv.realtime import RealtimeBackend


class SpeechSide(ConsumerBase):
    """The connection to OpenAI for the length of the call."""

    async def realtime_loop(self) -> None:
        """Open the Realtime session and pump its events; reopen it if it drops mid-call.

        A failure to open the first session ends the call with a spoken apology. A session
        lost mid-call (a dropped socket, the 60-minute session limit) is replaced by a new
        one, re-seeded with the conversation so far; caller audio is buffered meanwhile.
        """
        session = self.session
        attempts = voiceconv_settings.REALTIME_RECONNECT_ATTEMPTS
        failures = 0
        first = adopt = True
        while True:
            adopted = await self.preconnected_backend() if adopt else None
            adopt = False
            backend = adopted or self.get_backend()
            try:
                if adopted is None:
                    await asyncio.wait_for(
                        backend.connect(), voiceconv_settings.timeouts.connect
                    )
                    for event in self.first_events(reconnect=not first):
                        await backend.send(event)
            except asyncio.CancelledError:
                await close_quietly(backend)
                raise
            except Exception as exc:
                await close_quietly(backend)
                failures += 1
                if first or failures >= attempts:
                    self.log.error("could not open the Realtime session: %s", describe(exc))
                    await self.fail("openai_error", f"connect failed: {describe(exc)}")
                    return
                self.log.warning("reconnect attempt %d of %d failed: %s", failures, attempts,
                                 describe(exc))
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
                reason = describe(exc)
            finally:
                watchdog.cancel()
            if self._end_reason is not None:
                return
            self.backend = None
            was_ready = session.state.realtime_ready
            await self.run_actions(session.realtime_lost())
            await close_quietly(backend)
            if not was_ready and first and adopted is not None:
                self.log.warning("pre-connected session failed (%s); opening another", reason)
                continue
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

    async def preconnected_backend(self) -> RealtimeBackend | None:
        """The session pre-connected for this call while it rang (:mod:`voiceconv.preconnect`),
        if it is in this process and configured as this call's own would be; else None.

        A consumer that opens its sessions itself (an injected ``backend_factory``, its own
        ``get_backend`` or ``get_openai_client``) never adopts one."""
        cls = type(self)
        if (
            self.backend_factory is not None
            or self.info is None
            or cls.get_backend is not CallStart.get_backend
            or cls.get_openai_client is not CallStart.get_openai_client
        ):
            return None
        try:
            model = self.get_model() if self.backend_name == REALTIME else ""
            events = self.first_events(reconnect=False)
            plan = preconnect.plan_of(self.backend_name, model, events)
            return await preconnect.adopt(self.info.call_sid, plan)
        except Exception as exc:  # adoption is an optimisation: never the reason a call fails
            self.log.warning("could not adopt the pre-connected session: %s", describe(exc))
            return None

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
                self.log.warning("Realtime event could not be handled: %s", describe(exc))
                continue
            if isinstance(out, tuple):
                await send_text(out[0])
                await send_text(out[1])
            elif out:
                self.event_at_ns = perf_counter_ns()  # not per frame: audio is the tuple
                await self.run_actions(out)
                self.event_at_ns = 0

    # ------------------------------------------------------------------ actions
