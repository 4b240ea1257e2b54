"""A Twilio Media Streams client that drives the app the way Twilio does.

``TwilioStreamClient`` speaks from the test's side (like channels' ``WebsocketCommunicator``)
over a real websocket: it sends ``connected``/``start``/``media``/``dtmf``/``stop`` with the
exact shapes Twilio uses, and models Twilio's playback buffer for what the app sends back
(``media`` into a FIFO played at 8 bytes per ms of call time, ``mark`` echoed once the audio
queued before it has played, ``clear`` flushing audio and echoing pending marks at once).

Two clocks. With ``realtime=True`` frames are paced at wall-clock speed and playback runs in
a background task: what the app records (offsets, "heard" times, durations) is what a real
call would record. This is the default of :meth:`TwilioStreamClient.from_webhook`, the way in
for a test of an agent. The constructor's default is a virtual clock: call time advances by
20 ms for every 160-byte frame the client sends, so playback and the inbound media clock are
the same clock, as at Twilio, and tests never sleep; but nothing is played while the test
sends nothing, so let call time pass (``send_silence``, :meth:`wait_for_playback`) before
hanging up, or the caller will not have heard the answer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Self

from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from voiceconv.testing.audio import BYTES_PER_MS, FRAME_BYTES, silence
from voiceconv.testing.twilio_client.playback import Playback
from voiceconv.testing.twilio_client.records import (
    FRAME_MS,
    TWILIO_USER_AGENT,
    Chunk,
    ClearRecord,
    MarkRecord,
    MediaRecord,
    Violation,
    new_sid,
)
from voiceconv.testing.twilio_client.webhook import post_webhook, wss_form

__all__ = ["TwilioStreamClient"]

logger = logging.getLogger("voiceconv.testing.twilio_client")

class TwilioStreamClient(Playback):
    """Connects to a Media Streams websocket and behaves like Twilio towards the app.

    Use ``await client.start_call()`` (connect + ``connected`` + ``start``), then
    ``send_audio``/``send_silence`` to let call time pass, and inspect ``received_media``,
    ``received_marks``, ``clears``, ``heard`` and ``violations``.
    """

    def __init__(
        self,
        url: str,
        *,
        call_sid: str | None = None,
        stream_sid: str | None = None,
        account_sid: str | None = None,
        custom_parameters: Mapping[str, str] | None = None,
        auth_token: str | None = None,
        signature_url: str | None = None,
        realtime: bool = False,
        extra_headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        first_timestamp: int = 0,
        open_timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.call_sid = call_sid or new_sid("CA")
        self.stream_sid = stream_sid or new_sid("MZ")
        self.account_sid = account_sid or new_sid("AC")
        self.custom_parameters: dict[str, str] = dict(custom_parameters or {})
        self.auth_token = auth_token
        self.signature_url = signature_url or wss_form(url)
        self.realtime = realtime
        self.extra_headers = extra_headers
        self.first_timestamp = first_timestamp
        self.open_timeout = open_timeout
        #: Set by ``from_webhook``: the TwiML answered and the form posted.
        self.twiml: str | None = None
        self.webhook_form: dict[str, str] = {}
        self.connect_action: str | None = None

        # What we sent.
        self.sent_messages: list[dict[str, Any]] = []
        self.sent_frames: list[tuple[float, str]] = []
        # What the app sent.
        self.all_messages: list[dict[str, Any]] = []
        self.received_media: list[tuple[float, str]] = []
        self.media_records: list[MediaRecord] = []
        self.received_marks: list[MarkRecord] = []
        self.echoed_marks: list[MarkRecord] = []
        self.clears: list[float] = []
        self.clear_records: list[ClearRecord] = []
        self.violations: list[Violation] = []
        # Playback.
        self.heard = bytearray()
        self._fifo: deque[Chunk | MarkRecord] = deque()
        self._queued_bytes = 0
        self._cursor_ms = 0.0  # call time up to which playback has been accounted
        self._run_received = 0
        self._run_played = 0
        self._unmarked: list[MediaRecord] = []

        # Connection state.
        self.ws: ClientConnection | None = None
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._seq = 0
        self._chunk = 0
        self._media_clock_ms = 0.0  # stream time of the next inbound frame
        self._started_at: float | None = None
        self._started = False
        self._outbox: deque[tuple[str, dict[str, Any]]] = deque()
        self._send_lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self._player: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._player_wake = asyncio.Event()
        self._cursors: dict[str, int] = {}

    # ------------------------------------------------------------------ entering a call

    @classmethod
    async def from_webhook(
        cls,
        http_base: str,
        *,
        webhook_path: str = "/twilio/incoming/",
        form: Mapping[str, str] | None = None,
        auth_token: str | None = None,
        public_url: str | None = None,
        stream_base: str | None = None,
        timeout: float = 10.0,
        realtime: bool = True,
        **kwargs: Any,
    ) -> TwilioStreamClient:
        """POST the incoming-call webhook like Twilio and return a client for its stream.

        The client plays in real time (``realtime=True``) unless told otherwise, so the call's
        record reads as a real call's would.

        The request is signed over ``public_url + webhook_path`` (else the URL requested).
        The ``<Stream url>`` from the answered TwiML is mapped onto ``stream_base`` (default: the
        host of ``http_base`` with a ``ws``/``wss`` scheme), path kept; the websocket signature is
        computed over the TwiML's own ``wss://`` URL. ``<Parameter>``s become custom parameters.
        The client is not connected yet.
        """
        answer = await post_webhook(
            http_base,
            webhook_path=webhook_path,
            form=form,
            auth_token=auth_token,
            public_url=public_url,
            stream_base=stream_base,
            timeout=timeout,
            call_sid=kwargs.pop("call_sid", None),
            account_sid=kwargs.pop("account_sid", None),
        )
        kwargs.setdefault("signature_url", answer.signature_url)
        client = cls(
            answer.stream_url,
            call_sid=answer.call_sid,
            account_sid=answer.account_sid,
            custom_parameters=answer.parameters,
            auth_token=auth_token,
            realtime=realtime,
            **kwargs,
        )
        client.twiml = answer.twiml
        client.webhook_form = answer.form
        client.connect_action = answer.connect_action
        return client


    # ------------------------------------------------------------------ connection

    @property
    def connected(self) -> bool:
        """Whether the websocket is open."""
        return self.ws is not None and not self.closed.is_set()

    def handshake_headers(self) -> list[tuple[str, str]]:
        """Headers sent on the websocket upgrade (signature first, then ``extra_headers``)."""
        headers: list[tuple[str, str]] = []
        if self.auth_token:
            signature = RequestValidator(self.auth_token).compute_signature(self.signature_url, {})
            headers.append(("x-twilio-signature", signature))
        if self.extra_headers is not None:
            items = (
                self.extra_headers.items()
                if isinstance(self.extra_headers, Mapping)
                else self.extra_headers
            )
            headers.extend((str(k), str(v)) for k, v in items)
        return headers

    async def connect(self) -> Self:
        """Open the websocket (no subprotocol) and start the reader; idempotent."""
        if self.ws is not None:
            return self
        self.ws = await connect(
            self.url,
            additional_headers=self.handshake_headers(),
            user_agent_header=TWILIO_USER_AGENT,
            compression=None,
            max_size=None,
            proxy=None,
            ping_interval=None,
            open_timeout=self.open_timeout,
        )
        self._reader = asyncio.create_task(self._read_loop(), name=f"twilio-reader-{self.call_sid}")
        return self

    async def start_call(self) -> Self:
        """Connect, then send ``connected`` and ``start``, as Twilio does when a stream opens."""
        await self.connect()
        await self.send_connected()
        await self.send_start()
        return self

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the websocket from the Twilio side and stop the background tasks."""
        if self._player is not None:
            self._player.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._player
            self._player = None
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close(code, reason)
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        if self.ws is not None and not self.closed.is_set():
            self._mark_closed()

    async def __aenter__(self) -> Self:
        return await self.connect()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------ sending

    async def send_connected(self) -> None:
        """Send ``connected`` (no sequenceNumber, no streamSid)."""
        self._queue({"event": "connected", "protocol": "Call", "version": "1.0.0"}, seq=False)
        await self._flush()

    async def send_start(self) -> None:
        """Send ``start`` (sequenceNumber "1") and start the call clock."""
        self._queue(
            {
                "event": "start",
                "streamSid": self.stream_sid,
                "start": {
                    "accountSid": self.account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    "customParameters": dict(self.custom_parameters),
                },
            }
        )
        self._started = True
        self._started_at = time.monotonic()
        await self._flush()
        if self.realtime and self._player is None:
            self._player = asyncio.create_task(
                self._play_loop(), name=f"twilio-playout-{self.call_sid}"
            )

    async def send_media(self, payload: bytes) -> None:
        """Send one inbound ``media`` frame now (call time first advances by its duration).

        ``chunk`` counts frames, ``timestamp`` is the frame's start on the stream clock. In
        realtime mode, if the test paused longer than a frame or two, the timestamp jumps to the
        wall-clock call time, as Twilio's clock keeps running.
        """
        duration = len(payload) / BYTES_PER_MS
        if self.realtime:
            now = self._wall_call_ms()
            if now > self._media_clock_ms + duration + 2 * FRAME_MS:
                # The test paused: Twilio's clock kept running, so the timestamp jumps.
                self._media_clock_ms = max(self._media_clock_ms, now - duration)
        timestamp = self._media_clock_ms
        self._media_clock_ms += duration
        if not self.realtime:
            self._advance_to(self._media_clock_ms)
        else:
            self._advance_to(self._wall_call_ms())
        self._chunk += 1
        b64 = base64.b64encode(payload).decode("ascii")
        self._queue(
            {
                "event": "media",
                "streamSid": self.stream_sid,
                "media": {
                    "track": "inbound",
                    "chunk": str(self._chunk),
                    "timestamp": str(int(self.first_timestamp + timestamp)),
                    "payload": b64,
                },
            }
        )
        self.sent_frames.append((time.monotonic(), b64))
        await self._flush()

    async def send_audio(self, audio: bytes) -> None:
        """Send ``audio`` as 160-byte frames, paced every 20 ms (realtime) or at once (virtual)."""
        for offset in range(0, len(audio), FRAME_BYTES):
            frame = audio[offset : offset + FRAME_BYTES]
            if self.realtime:
                await self._wait_frame_deadline(len(frame) / BYTES_PER_MS)
            await self.send_media(frame)
            if not self.realtime:
                await asyncio.sleep(0)

    async def send_silence(self, ms: int) -> None:
        """Send ``ms`` milliseconds of μ-law silence (``0xFF``) as paced frames."""
        await self.send_audio(silence(ms))

    async def send_dtmf(self, digit: str) -> None:
        """Send a ``dtmf`` event for ``digit`` on the inbound track."""
        self._queue(
            {
                "event": "dtmf",
                "streamSid": self.stream_sid,
                "dtmf": {"track": "inbound_track", "digit": str(digit)},
            }
        )
        await self._flush()

    async def send_stop(self) -> None:
        """Send ``stop`` (the socket stays open; see ``hang_up``)."""
        self._queue(
            {
                "event": "stop",
                "streamSid": self.stream_sid,
                "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
            }
        )
        await self._flush()

    async def hang_up(self) -> None:
        """End the call as Twilio does when the caller hangs up: ``stop``, then close."""
        if self.connected:
            with contextlib.suppress(ConnectionClosed):
                await self.send_stop()
        await self.close()

    async def send_raw(self, data: str | bytes) -> None:
        """Send a raw text or binary frame, as is (for bad-input tests)."""
        await self._flush()
        async with self._send_lock:
            await self._require_ws().send(data)

    # ------------------------------------------------------------------ waiting

    async def expect_event(self, event: str, timeout: float = 2.0) -> dict[str, Any]:
        """Return the next not-yet-returned accepted message of type ``event``."""
        start = self._cursors.get(event, 0)

        def find() -> int | None:
            for i in range(start, len(self.all_messages)):
                if self.all_messages[i].get("event") == event:
                    return i
            return None

        try:
            await self.wait_for(lambda: find() is not None, timeout)
        except TimeoutError:
            seen = [m.get("event") for m in self.all_messages[start:]]
            raise TimeoutError(
                f"no {event!r} from the app within {timeout}s; saw {seen}{self._closed_note()}"
            ) from None
        index = find()
        assert index is not None
        self._cursors[event] = index + 1
        return self.all_messages[index]

    async def wait_for_media(
        self, n_bytes: int | None = None, *, count: int | None = None, timeout: float = 2.0
    ) -> int:
        """Wait until ``n_bytes`` of audio or ``count`` media messages arrived; return the bytes."""
        if n_bytes is None and count is None:
            count = len(self.media_records) + 1

        def done() -> bool:
            if count is not None and len(self.media_records) < count:
                return False
            return n_bytes is None or self.received_bytes >= n_bytes

        try:
            await self.wait_for(done, timeout)
        except TimeoutError:
            raise TimeoutError(
                f"media: got {self.received_bytes} bytes in {len(self.media_records)} messages "
                f"within {timeout}s, wanted bytes={n_bytes} count={count}{self._closed_note()}"
            ) from None
        return self.received_bytes

    async def wait_for_marks(self, count: int, timeout: float = 2.0) -> list[MarkRecord]:
        """Wait until ``count`` marks have been received from the app."""
        await self.wait_for(lambda: len(self.received_marks) >= count, timeout)
        return self.received_marks[:count]

    async def wait_for_playback(self, timeout: float = 10.0, *, quiet: float = 0.3) -> float:
        """Let the caller hear everything the app sends; return the milliseconds heard.

        Done once the playback buffer is empty and no audio has arrived for ``quiet`` seconds
        (the answer is over, not between two chunks). In real time this waits; on the virtual
        clock it sends silence, so that call time passes. Marks are echoed on the way.
        """
        async with asyncio.timeout(timeout):
            while True:
                if self.realtime:
                    await self.wait_for(lambda: self._queued_bytes == 0, timeout)
                else:
                    while self._queued_bytes:
                        await self.send_silence(FRAME_MS)
                await self._flush()
                last = self.media_records[-1].at if self.media_records else 0.0
                wait = last + quiet - time.monotonic()
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
        return self.played_ms

    async def wait_closed(self, timeout: float = 2.0) -> int | None:
        """Wait until the connection is closed; return the close code."""
        async with asyncio.timeout(timeout):
            await self.closed.wait()
        return self.close_code

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 2.0) -> None:
        """Wait until ``predicate()`` holds; re-checked after every message from the app."""
        async with asyncio.timeout(timeout):
            while not predicate():
                if self.closed.is_set():
                    raise TimeoutError(f"connection closed (code {self.close_code})")
                await self._changed.wait()

    # ------------------------------------------------------------------ internals

    def _require_ws(self) -> ClientConnection:
        if self.ws is None:
            raise RuntimeError("TwilioStreamClient is not connected; call connect() first")
        return self.ws

    def _closed_note(self) -> str:
        return f"; connection closed (code {self.close_code})" if self.closed.is_set() else ""

    def _wall_call_ms(self) -> float:
        if self._started_at is None:
            return 0.0
        return (time.monotonic() - self._started_at) * 1000.0

    async def _wait_frame_deadline(self, duration_ms: float) -> None:
        """Sleep until the frame starting at the media clock has been 'captured' (absolute)."""
        if self._started_at is None:
            return
        deadline_ms = self._media_clock_ms + duration_ms
        delay = (deadline_ms - self._wall_call_ms()) / 1000.0
        if delay > 0:
            await asyncio.sleep(delay)

    def _queue(self, message: dict[str, Any], *, seq: bool = True) -> None:
        """Number ``message`` and put it in the outbox (order = numbering order)."""
        self._require_ws()
        if seq:
            self._seq += 1
            message = {"event": message["event"], "sequenceNumber": str(self._seq), **message}
        self.sent_messages.append(message)
        self._outbox.append((json.dumps(message, separators=(",", ":")), message))

    async def _flush(self) -> None:
        ws = self._require_ws()
        async with self._send_lock:
            while self._outbox:
                text, _ = self._outbox.popleft()
                await ws.send(text)

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _violation(self, code: int, reason: str, raw: str | bytes) -> None:
        logger.warning("Twilio %s: %s", code, reason)
        self.violations.append(Violation(code, reason, raw))

    async def _read_loop(self) -> None:
        ws = self._require_ws()
        try:
            while True:
                raw = await ws.recv()
                self._handle(raw)
                self._notify()
                if self._outbox:
                    await self._flush()
        except ConnectionClosed:
            pass
        finally:
            self._mark_closed()

    def _mark_closed(self) -> None:
        if self.ws is not None:
            self.close_code = self.ws.close_code
            self.close_reason = self.ws.close_reason
        self.closed.set()
        if self._player is not None and self._player is not asyncio.current_task():
            self._player.cancel()
        self._notify()
