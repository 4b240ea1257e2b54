"""The stand-in's SIP control surface: incoming calls, their REST verbs and signed webhooks.

OpenAI's SIP path has three parts a test needs without a carrier:

- the ``realtime.call.incoming`` webhook OpenAI POSTs to the app, signed with the Standard
  Webhooks scheme the SDK's ``webhooks.unwrap`` verifies (:func:`send_call_incoming`);
- the REST verbs ``POST /v1/realtime/calls/{call_id}/accept|reject|refer|hangup`` on the same
  base URL as the socket (served by :class:`SipFront`, which hands every other request to the
  WebSocket server behind it);
- the sideband socket ``/v1/realtime?call_id=…`` of an accepted call: a session configured by
  the accept, with no audio in either direction (scripted caller turns and responses as on any
  stand-in session).

Every accept body is checked against the SDK's ``CallAcceptParams`` and its session against
the SDK's ``session.update`` type; webhook payloads against ``RealtimeCallIncomingWebhookEvent``.
Problems land in :attr:`SipCall.protocol_violations`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import re
import secrets
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from voiceconv.testing.realtime_server.protocol import validate_client_event

if TYPE_CHECKING:
    from voiceconv.testing.realtime_server.session import StandInSession

__all__ = ["SipCall", "SipFront", "send_call_incoming", "sign_webhook"]

_VERB_PATH = re.compile(
    r"^/v1/realtime/calls/(?P<call>[^/]+)/(?P<verb>accept|reject|refer|hangup)$"
)


@dataclass
class SipCall:
    """One call the "trunk" sent to the stand-in, and what the app did with it."""

    call_id: str
    sip_headers: list[dict[str, str]]
    #: ``incoming`` → ``accepted`` | ``rejected``; an accepted call → ``hung_up`` (by the app),
    #: ``referred`` (transferred) or ``caller_hung_up``.
    status: str = "incoming"
    accept: dict[str, Any] | None = None
    reject_status: int | None = None
    refer_target: str | None = None
    #: Every REST request for this call: ``(verb, body)`` in order.
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    protocol_violations: list[str] = field(default_factory=list)
    session: StandInSession | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def verbs(self) -> list[str]:
        return [verb for verb, _ in self.requests]

    async def wait_for(self, *statuses: str, timeout: float = 10.0) -> str:
        """Wait until the call's status is one of ``statuses``; returns it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.status not in statuses:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"call {self.call_id} is {self.status!r}, not {statuses}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)
        return self.status

    async def caller_hangs_up(self) -> None:
        """The caller hangs up: the sideband closes (1000), as the service closes it."""
        self._set("caller_hung_up")
        if self.session is not None:
            await self.session.ws.close(1000, "call ended")

    def _set(self, status: str) -> None:
        self.status = status
        self.changed.set()

    def event(self) -> dict[str, Any]:
        """The ``realtime.call.incoming`` event for this call (checked against the SDK)."""
        event = {
            "object": "event",
            "id": "evt_" + secrets.token_hex(12),
            "type": "realtime.call.incoming",
            "created_at": int(time.time()),
            "data": {"call_id": self.call_id, "sip_headers": self.sip_headers,
                     "sip_media_security": "srtp"},
        }
        # Imported on first use: the SDK's event models take seconds to import; only validation
        # needs them.
        from openai.types.webhooks import RealtimeCallIncomingWebhookEvent

        RealtimeCallIncomingWebhookEvent.model_validate(event)
        return event


def new_call(from_number: str, to_number: str, *, host: str = "sip.api.openai.com",
             headers: dict[str, str] | None = None) -> SipCall:
    """A call from ``from_number`` to ``to_number`` as a Twilio trunk would send it."""
    call_id = "rtc_" + secrets.token_hex(16)
    sip_headers = [
        {"name": "From", "value": f'"Caller" <sip:{from_number}@trunk.pstn.twilio.com>;tag=a1'},
        {"name": "To", "value": f"<sip:{to_number}@{host};transport=tls>"},
        {"name": "Call-ID", "value": secrets.token_hex(16) + "@trunk.pstn.twilio.com"},
        {"name": "X-Twilio-CallSid", "value": "CA" + secrets.token_hex(16)},
    ]
    sip_headers += [{"name": k, "value": v} for k, v in (headers or {}).items()]
    return SipCall(call_id=call_id, sip_headers=sip_headers)


def sign_webhook(body: str, secret: str, *, webhook_id: str | None = None,
                 timestamp: int | None = None) -> dict[str, str]:
    """Standard Webhooks headers for ``body`` (``whsec_`` secrets are base64)."""
    webhook_id = webhook_id or "wh_" + secrets.token_hex(12)
    ts = str(int(time.time()) if timestamp is None else timestamp)
    key = base64.b64decode(secret[6:]) if secret.startswith("whsec_") else secret.encode()
    mac = hmac.new(key, f"{webhook_id}.{ts}.{body}".encode(), hashlib.sha256).digest()
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": ts,
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        "content-type": "application/json",
    }


async def send_call_incoming(url: str, call: SipCall, secret: str, *,
                             webhook_id: str | None = None, event: dict[str, Any] | None = None,
                             timestamp: int | None = None) -> tuple[int, str]:
    """POST the call's signed ``realtime.call.incoming`` webhook to the app at ``url``.

    Returns (HTTP status, webhook-id). Pass the same ``webhook_id`` (and ``event``) again to
    deliver a retry, as OpenAI does when an answer is late.
    """
    body = json.dumps(event or call.event())
    headers = sign_webhook(body, secret, webhook_id=webhook_id, timestamp=timestamp)

    def post() -> int:
        request = urllib.request.Request(url, data=body.encode(), headers=headers,
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    return await asyncio.to_thread(post), headers["webhook-id"]


def check_accept(body: dict[str, Any]) -> list[str]:
    """Problems of an accept body, by the SDK's ``CallAcceptParams`` and session types."""
    # Imported on first use: the SDK's event models take seconds to import; only validation
    # needs them.
    from openai.types.realtime.call_accept_params import CallAcceptParams

    problems: list[str] = []
    unknown = set(body) - set(CallAcceptParams.__annotations__)
    if unknown:
        problems.append(f"accept: unknown keys {sorted(unknown)}")
    if body.get("type") != "realtime":
        problems.append("accept: type must be 'realtime'")
    session = {k: v for k, v in body.items() if k not in unknown}
    problems += [f"accept: {p}" for p in validate_client_event(
        {"type": "session.update", "session": session})]
    return problems


class SipFront:
    """The stand-in's public port: REST call verbs here, everything else to the socket server."""

    def __init__(self, calls: dict[str, SipCall], host: str, port: int, ws_port: int) -> None:
        self.calls = calls
        self.host = host
        self.port = port
        self.ws_port = ws_port
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, path, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            if method == "POST":
                await self._rest(head, path, reader, writer)
            else:
                await self._proxy(head, reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        except asyncio.CancelledError:
            pass  # the stand-in is stopping: the connection just closes
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _rest(self, head: bytes, path: str, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        headers = {}
        for line in head.decode("latin-1").split("\r\n")[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        raw = await reader.readexactly(int(headers.get("content-length") or 0))
        status, answer = self.handle(path.split("?", 1)[0], headers, raw)
        payload = json.dumps(answer).encode() if answer is not None else b""
        reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
                  409: "Conflict"}.get(status, "Error")
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(payload)}\r\nconnection: close\r\n\r\n".encode() + payload
        )
        await writer.drain()

    def handle(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        """One REST request: (status, JSON answer or None)."""
        match = _VERB_PATH.match(path)
        if match is None:
            return 404, _error(f"Invalid URL (POST {path})", "unknown_url")
        if not headers.get("authorization", "").startswith("Bearer "):
            return 401, _error("You didn't provide an API key.", None)
        call = self.calls.get(match["call"])
        if call is None:
            return 404, _error(f"Call '{match['call']}' not found.", "call_not_found")
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return 400, _error("The body is not valid JSON.", "invalid_json")
        verb = match["verb"]
        call.requests.append((verb, body))
        if verb in ("accept", "reject") and call.status != "incoming":
            return 409, _error(f"Call is {call.status}, not pending.", "call_not_pending")
        if verb in ("refer", "hangup") and call.status != "accepted":
            return 409, _error(f"Call is {call.status}, not active.", "call_not_active")
        if verb == "accept":
            problems = check_accept(body)
            call.protocol_violations += problems
            if problems:
                return 400, _error("; ".join(problems), "invalid_request_error")
            call.accept = body
            call._set("accepted")
        elif verb == "reject":
            status_code = body.get("status_code", 603)
            if not isinstance(status_code, int) or not 400 <= status_code <= 699:
                call.protocol_violations.append(f"reject: bad status_code {status_code!r}")
                return 400, _error("Invalid 'status_code'.", "invalid_value")
            call.reject_status = status_code
            call._set("rejected")
        elif verb == "refer":
            target = body.get("target_uri")
            if not isinstance(target, str) or not target.startswith(("tel:", "sip:", "sips:")):
                call.protocol_violations.append(f"refer: bad target_uri {target!r}")
                return 400, _error("Invalid 'target_uri'.", "invalid_value")
            call.refer_target = target
            call._set("referred")
            self._close_sideband(call)
        else:
            call._set("hung_up")
            self._close_sideband(call)
        return 200, None

    def _close_sideband(self, call: SipCall) -> None:
        session = call.session
        if session is not None:
            task = asyncio.ensure_future(session.ws.close(1000, "call ended"))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _proxy(self, head: bytes, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.ws_port)
        up_writer.write(head)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer),
                                 return_exceptions=True)
        finally:
            up_writer.close()


def _error(message: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": None,
                      "code": code}}
