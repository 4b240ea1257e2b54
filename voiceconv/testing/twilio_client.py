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
import binascii
import contextlib
import json
import logging
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from voiceconv.testing.audio import BYTES_PER_MS, FRAME_BYTES, silence

__all__ = [
    "ClearRecord",
    "MarkRecord",
    "MediaRecord",
    "TwilioStreamClient",
    "TwilioWebhookError",
    "Violation",
    "new_sid",
]

logger = logging.getLogger(__name__)

FRAME_MS = FRAME_BYTES // BYTES_PER_MS
#: Twilio discards outbound audio beyond 10 minutes of buffer (warning 31931).
MAX_BUFFER_BYTES = 10 * 60 * 1000 * BYTES_PER_MS
#: User-Agent Twilio's media servers send on the upgrade.
TWILIO_USER_AGENT = "Twilio.TmeWs/1.0"

_APP_EVENTS = {"media": "media", "mark": "mark", "clear": None}


def new_sid(prefix: str) -> str:
    """A realistic Twilio sid: two-letter ``prefix`` + 32 lowercase hex digits."""
    return prefix + secrets.token_hex(16)


class TwilioWebhookError(RuntimeError):
    """The incoming-call webhook did not answer with usable ``<Connect><Stream>`` TwiML."""


@dataclass
class Violation:
    """A message from the app that Twilio would ignore and flag in its debugger.

    ``code`` is Twilio's: 31950 undecodable (binary) message, 31951 invalid message (not JSON,
    unknown type, missing/extra field, wrong streamSid), 31931 playback buffer overflow.
    """

    code: int
    reason: str
    raw: str | bytes
    at: float = field(default_factory=time.monotonic)


@dataclass
class MediaRecord:
    """One ``media`` message received from the app and what became of its audio."""

    index: int
    at: float
    payload: str
    size: int
    call_ms: float
    played: int = 0
    dropped: int = 0
    next_mark: str | None = None

    @property
    def played_ms(self) -> float:
        """Milliseconds of this message's audio that were played."""
        return self.played / BYTES_PER_MS


@dataclass
class MarkRecord:
    """One ``mark`` received from the app, and when it was echoed back."""

    name: str
    received_at: float
    received_call_ms: float
    echoed_at: float | None = None
    echo_call_ms: float | None = None
    heard_bytes: int | None = None
    cleared: bool = False

    @property
    def echoed(self) -> bool:
        """Whether the mark has been echoed back to the app."""
        return self.echoed_at is not None


@dataclass
class ClearRecord:
    """One ``clear`` received from the app: what had been heard and what was dropped.

    ``run_received``/``run_played`` count the bytes of media received since the previous clear
    (the current "run" of assistant audio) and how many of them the caller actually heard.
    """

    at: float
    call_ms: float
    heard_bytes: int
    dropped_bytes: int
    run_received: int
    run_played: int
    flushed_marks: list[str]

    @property
    def run_played_ms(self) -> float:
        """Milliseconds of the current run the caller heard before the clear."""
        return self.run_played / BYTES_PER_MS


@dataclass
class _Chunk:
    record: MediaRecord
    data: bytes
    offset: int = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.offset


def _wss_form(url: str) -> str:
    """The ``wss://`` form of a websocket or HTTP URL, host and path unchanged."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(("wss", parts.netloc, parts.path, parts.query, ""))


class TwilioStreamClient:
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
        self.signature_url = signature_url or _wss_form(url)
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
        self._fifo: deque[_Chunk | MarkRecord] = deque()
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
        call_sid = kwargs.pop("call_sid", None) or new_sid("CA")
        account_sid = kwargs.pop("account_sid", None) or new_sid("AC")
        fields = {
            "AccountSid": account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": call_sid,
            "CallStatus": "ringing",
            "Called": "+14155550199",
            "Caller": "+14155550100",
            "Direction": "inbound",
            "From": "+14155550100",
            "To": "+14155550199",
        }
        fields.update(form or {})
        if form and "From" in form and "Caller" not in form:
            fields["Caller"] = form["From"]
        if form and "To" in form and "Called" not in form:
            fields["Called"] = form["To"]
        call_sid = fields["CallSid"]
        account_sid = fields["AccountSid"]

        request_url = http_base.rstrip("/") + webhook_path
        signed_url = (public_url.rstrip("/") + webhook_path) if public_url else request_url
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "TwilioProxy/1.1",
            "Accept": "*/*",
        }
        if auth_token:
            headers["X-Twilio-Signature"] = RequestValidator(auth_token).compute_signature(
                signed_url, fields
            )
        body = urllib.parse.urlencode(fields).encode()
        status, twiml = await asyncio.to_thread(_post, request_url, body, headers, timeout)
        if status != 200:
            raise TwilioWebhookError(f"webhook {request_url} answered HTTP {status}: {twiml[:500]}")

        try:
            root = ET.fromstring(twiml)
        except ET.ParseError as exc:
            raise TwilioWebhookError(
                f"webhook answered invalid TwiML ({exc}): {twiml[:500]}"
            ) from exc
        connect_el = root.find("Connect")
        stream_el = connect_el.find("Stream") if connect_el is not None else None
        if connect_el is None or stream_el is None or not stream_el.get("url"):
            raise TwilioWebhookError(f"no <Connect><Stream url> in TwiML: {twiml[:500]}")
        params = {p.get("name", ""): p.get("value", "") for p in stream_el.findall("Parameter")}
        base_for_relative = _wss_form(public_url or http_base)
        stream_url = urllib.parse.urljoin(base_for_relative + "/", stream_el.get("url", ""))
        parts = urllib.parse.urlsplit(stream_url)
        if parts.scheme != "wss":
            logger.warning("TwiML <Stream url=%r> is not wss:// (Twilio error 31922)", stream_url)
        if parts.query:
            logger.warning("TwiML <Stream url=%r> has a query string; Twilio drops it", stream_url)
        signature_url = urllib.parse.urlunsplit(("wss", parts.netloc, parts.path, "", ""))
        if stream_base is None:
            base = urllib.parse.urlsplit(http_base)
            scheme = "wss" if base.scheme == "https" else "ws"
            stream_base = f"{scheme}://{base.netloc}"
        loopback_url = stream_base.rstrip("/") + parts.path

        kwargs.setdefault("signature_url", signature_url)
        client = cls(
            loopback_url,
            call_sid=call_sid,
            account_sid=account_sid,
            custom_parameters=params,
            auth_token=auth_token,
            realtime=realtime,
            **kwargs,
        )
        client.twiml = twiml
        client.webhook_form = fields
        client.connect_action = connect_el.get("action")
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

    # ------------------------------------------------------------------ playback state

    @property
    def received_bytes(self) -> int:
        """Total bytes of accepted media received from the app."""
        return sum(r.size for r in self.media_records)

    @property
    def played_ms(self) -> float:
        """Milliseconds of app audio the caller has heard."""
        return len(self.heard) / BYTES_PER_MS

    @property
    def queued_bytes(self) -> int:
        """Bytes of app audio waiting in the playback buffer."""
        return self._queued_bytes

    @property
    def call_time_ms(self) -> float:
        """Call time since ``start``: inbound audio sent (virtual) or wall time (realtime)."""
        if self.realtime:
            return self._wall_call_ms()
        return self._media_clock_ms

    @property
    def pending_marks(self) -> list[str]:
        """Names of marks queued behind unplayed audio."""
        return [item.name for item in self._fifo if isinstance(item, MarkRecord)]

    def played_bytes_by_mark(self) -> dict[str, int]:
        """For each mark name: bytes played of the media received since the previous mark."""
        out: dict[str, int] = {}
        for record in self.media_records:
            if record.next_mark is not None:
                out[record.next_mark] = out.get(record.next_mark, 0) + record.played
        return out

    def mark(self, name: str) -> MarkRecord:
        """The last received mark called ``name``."""
        for record in reversed(self.received_marks):
            if record.name == name:
                return record
        raise KeyError(name)

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

    def _handle(self, raw: str | bytes) -> None:
        """Validate one frame from the app and apply it to the playback model."""
        if isinstance(raw, bytes):
            self._violation(31950, f"binary frame of {len(raw)} bytes", raw)
            return
        try:
            message = json.loads(raw)
        except ValueError:
            self._violation(31951, "not JSON", raw)
            return
        if not isinstance(message, dict):
            self._violation(31951, "not a JSON object", raw)
            return
        event = message.get("event")
        if event not in _APP_EVENTS:
            self._violation(31951, f"unknown event {event!r}", raw)
            return
        if not self._started:
            self._violation(31951, f"{event!r} before start (no streamSid yet)", raw)
            return
        if message.get("streamSid") != self.stream_sid:
            sid = message.get("streamSid")
            self._violation(31951, f"{event} with wrong streamSid {sid!r}", raw)
            return
        body_key = _APP_EVENTS[event]
        allowed = {"event", "streamSid"} | ({body_key} if body_key else set())
        extra = set(message) - allowed
        if extra:
            self._violation(31951, f"{event} with extra fields {sorted(extra)}", raw)
            return
        if event == "media":
            payload = self._media_payload(message, raw)
            if payload is None:
                return
            self.all_messages.append(message)
            self._on_media(message["media"]["payload"], payload)
        elif event == "mark":
            body = message.get("mark")
            if (
                not isinstance(body, dict)
                or set(body) != {"name"}
                or not isinstance(body["name"], str)
            ):
                self._violation(31951, "mark without a string mark.name (or extra fields)", raw)
                return
            self.all_messages.append(message)
            self._on_mark(body["name"])
        else:
            self.all_messages.append(message)
            self._on_clear()

    def _media_payload(self, message: dict[str, Any], raw: str) -> bytes | None:
        body = message.get("media")
        if (
            not isinstance(body, dict)
            or set(body) != {"payload"}
            or not isinstance(body["payload"], str)
        ):
            self._violation(31951, "media without a string media.payload (or extra fields)", raw)
            return None
        try:
            payload = base64.b64decode(body["payload"], validate=True)
        except (binascii.Error, ValueError):
            self._violation(31951, "media.payload is not base64", raw)
            return None
        return payload

    def _now_call_ms(self) -> float:
        return self._wall_call_ms() if self.realtime else self._media_clock_ms

    def _on_media(self, b64: str, payload: bytes) -> None:
        now = time.monotonic()
        if self.realtime:
            self._advance_to(self._wall_call_ms())
        self.received_media.append((now, b64))
        record = MediaRecord(len(self.media_records), now, b64, len(payload), self._now_call_ms())
        self.media_records.append(record)
        self._unmarked.append(record)
        self._run_received += len(payload)
        if self._queued_bytes + len(payload) > MAX_BUFFER_BYTES:
            record.dropped = len(payload)
            self._violation(31931, "more than 10 minutes of audio buffered; media dropped", b64)
            return
        if not self._fifo:
            self._cursor_ms = max(self._cursor_ms, self._now_call_ms())
        if payload:
            self._fifo.append(_Chunk(record, payload))
            self._queued_bytes += len(payload)
        self._player_wake.set()

    def _on_mark(self, name: str) -> None:
        if self.realtime:
            self._advance_to(self._wall_call_ms())
        record = MarkRecord(name, time.monotonic(), self._now_call_ms())
        self.received_marks.append(record)
        for media in self._unmarked:
            media.next_mark = name
        self._unmarked.clear()
        if self._fifo:
            self._fifo.append(record)
            self._player_wake.set()
        else:
            self._echo(record, self._now_call_ms())

    def _on_clear(self) -> None:
        if self.realtime:
            self._advance_to(self._wall_call_ms())
        now_ms = self._now_call_ms()
        dropped = 0
        flushed: list[MarkRecord] = []
        for item in self._fifo:
            if isinstance(item, MarkRecord):
                flushed.append(item)
            else:
                item.record.dropped += item.remaining
                dropped += item.remaining
        self._fifo.clear()
        self._queued_bytes = 0
        self._unmarked.clear()
        for record in flushed:
            record.cleared = True
            self._echo(record, now_ms)
        self.clears.append(time.monotonic())
        self.clear_records.append(
            ClearRecord(
                at=self.clears[-1],
                call_ms=now_ms,
                heard_bytes=len(self.heard),
                dropped_bytes=dropped,
                run_received=self._run_received,
                run_played=self._run_played,
                flushed_marks=[r.name for r in flushed],
            )
        )
        self._run_received = 0
        self._run_played = 0
        self._cursor_ms = max(self._cursor_ms, now_ms)

    def _echo(self, record: MarkRecord, call_ms: float) -> None:
        record.echoed_at = time.monotonic()
        record.echo_call_ms = call_ms
        record.heard_bytes = len(self.heard)
        self.echoed_marks.append(record)
        self._queue({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": record.name}})

    def _advance_to(self, target_ms: float) -> None:
        """Play the FIFO up to call time ``target_ms``, echoing marks as they are reached."""
        if target_ms <= self._cursor_ms:
            return
        while self._fifo:
            head = self._fifo[0]
            if isinstance(head, MarkRecord):
                self._fifo.popleft()
                self._echo(head, self._cursor_ms)
                continue
            budget = int((target_ms - self._cursor_ms) * BYTES_PER_MS + 1e-6)
            if budget <= 0:
                break
            n = min(budget, head.remaining)
            played = head.data[head.offset : head.offset + n]
            self.heard += played
            head.offset += n
            head.record.played += n
            self._queued_bytes -= n
            self._run_played += n
            self._cursor_ms += n / BYTES_PER_MS
            if head.remaining == 0:
                self._fifo.popleft()
        if not self._fifo:
            self._cursor_ms = target_ms
        self._notify()

    def _next_boundary_ms(self) -> float | None:
        """Call time at which the audio before the first queued mark will have played."""
        ahead = 0
        for item in self._fifo:
            if isinstance(item, MarkRecord):
                return self._cursor_ms + ahead / BYTES_PER_MS
            ahead += item.remaining
        return None

    async def _play_loop(self) -> None:
        """Realtime playback: advance with wall time, waking exactly at mark boundaries."""
        try:
            while True:
                self._player_wake.clear()
                self._advance_to(self._wall_call_ms())
                if self._outbox:
                    await self._flush()
                boundary = self._next_boundary_ms()
                if boundary is not None:
                    delay = max(0.0, (boundary - self._wall_call_ms()) / 1000.0)
                    delay = min(delay, FRAME_MS / 1000.0)
                elif self._fifo:
                    delay = FRAME_MS / 1000.0
                else:
                    delay = None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._player_wake.wait()
        except ConnectionClosed:
            pass


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int, str]:
    """POST ``body`` and return ``(status, text)``; HTTP errors are returned, not raised."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode("utf-8", "replace")
