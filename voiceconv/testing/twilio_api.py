"""A stand-in for Twilio's REST API on loopback: records requests, answers as told, and plays
Twilio's part in a call's life (the answer URL, status and answering-machine callbacks).

Point voiceconv at it with ``VOICECONV["TWILIO_API_BASE"] = api.url`` and assert on the
exact requests a hang-up or transfer makes::

    with FakeTwilioAPI() as api:
        ...
        request = api.requests[0]
        assert request.path == f"/2010-04-01/Accounts/{account}/Calls/{call}.json"
        assert request.form["Twiml"] == ["<Response><Dial>+14155550100</Dial></Response>"]

Outbound calls (``client.calls.create``) get a new CallSid and are kept in :attr:`calls`;
the test then answers them as Twilio would, with signed requests to the app::

    api = FakeTwilioAPI(auth_token=token, public_url="https://voice.example.test",
                        app_url=server.http_url)
    call = await api.wait_for_call()
    client = await api.answer(call.sid)          # POSTs the answer URL; a TwilioStreamClient
    await client.start_call()
    await api.send_amd(call.sid, "machine_end_beep")
    await api.send_status(call.sid, "completed", duration=42)

:meth:`fail_next` makes the next request fail with a Twilio error (code and message).
Recordings started on a call (``calls(sid).recordings.create``) are kept in
:attr:`recordings`; their media is served (with the account's credentials only) at
``/2010-04-01/Accounts/{account}/Recordings/{sid}.wav``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from twilio.request_validator import RequestValidator

if TYPE_CHECKING:
    from voiceconv.testing.twilio_client import TwilioStreamClient

__all__ = ["FakeTwilioAPI", "PlacedCall", "StartedRecording", "TwilioRequest"]

_CALL_PATH = re.compile(r"/2010-04-01/Accounts/(?P<account>AC\w+)/Calls/(?P<call>CA\w+)\.json")
_CALLS_PATH = re.compile(r"/2010-04-01/Accounts/(?P<account>AC\w+)/Calls\.json$")
_RECORDINGS_PATH = re.compile(
    r"/2010-04-01/Accounts/(?P<account>AC\w+)/Calls/(?P<call>CA\w+)/Recordings\.json$"
)
_MEDIA_PATH = re.compile(
    r"/2010-04-01/Accounts/(?P<account>AC\w+)/Recordings/(?P<rec>RE\w+)\.(?P<ext>wav|mp3)$"
)


@dataclass
class TwilioRequest:
    """One request the fake API received."""

    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, list[str]]
    at: float


@dataclass
class PlacedCall:
    """A call created through the API (``POST …/Calls.json``), as Twilio keeps it."""

    sid: str
    account_sid: str
    form: dict[str, list[str]]
    status: str = "queued"

    def param(self, name: str, default: str = "") -> str:
        values = self.form.get(name)
        return values[0] if values else default

    @property
    def to(self) -> str:
        return self.param("To")

    @property
    def from_(self) -> str:
        return self.param("From")


@dataclass
class StartedRecording:
    """A recording started on a call (``POST …/Calls/{sid}/Recordings.json``)."""

    sid: str
    account_sid: str
    call_sid: str
    form: dict[str, list[str]]

    def param(self, name: str, default: str = "") -> str:
        values = self.form.get(name)
        return values[0] if values else default


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode("utf-8", "replace")


@dataclass
class FakeTwilioAPI:
    """A threaded HTTP server answering Twilio REST calls.

    ``status``/``body`` answer every request alike when ``body`` is given (a call resource
    built from the path otherwise). ``auth_token``, ``public_url`` and ``app_url`` are what the
    callbacks need: requests are signed over ``public_url`` and delivered to ``app_url``.
    """

    #: HTTP status to answer with, and the body (a call resource built from the path if None).
    status: int = 200
    body: dict[str, Any] | None = None
    auth_token: str = ""
    public_url: str = ""
    app_url: str = ""
    #: Bytes served as every recording's media.
    recording_audio: bytes = b"RIFF\x24\x00\x00\x00WAVEfmt "
    #: Seconds to wait before answering (the request is recorded at once): a slow Twilio.
    delay: float = 0.0
    requests: list[TwilioRequest] = field(default_factory=list)
    calls: dict[str, PlacedCall] = field(default_factory=dict)
    recordings: dict[str, StartedRecording] = field(default_factory=dict)
    #: Callbacks delivered to the app: (url, form, HTTP status answered).
    callbacks: list[tuple[str, dict[str, str], int]] = field(default_factory=list)
    url: str = ""
    _failures: list[tuple[int, int, str]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _changed: threading.Condition = field(default_factory=threading.Condition)

    # ------------------------------------------------------------------ the server

    def start(self) -> FakeTwilioAPI:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode()
                request = TwilioRequest(
                    "POST", self.path, dict(self.headers.items()), parse_qs(raw), time.monotonic()
                )
                status, body = fake._answer(request)
                with fake._changed:  # recorded before the client can see the answer
                    fake.requests.append(request)
                    fake._changed.notify_all()
                if fake.delay > 0:
                    time.sleep(fake.delay)
                self._reply(status, json.dumps(body).encode(), "application/json")

            def do_GET(self) -> None:
                request = TwilioRequest(
                    "GET", self.path, dict(self.headers.items()), {}, time.monotonic()
                )
                with fake._changed:
                    fake.requests.append(request)
                    fake._changed.notify_all()
                match = _MEDIA_PATH.match(urllib.parse.urlsplit(self.path).path)
                if match is None or match["rec"] not in fake.recordings:
                    self._reply(404, b'{"code": 20404, "status": 404}', "application/json")
                elif not fake._authorized(request, match["account"]):
                    self._reply(401, b'{"code": 20003, "status": 401}', "application/json")
                else:
                    kind = "audio/x-wav" if match["ext"] == "wav" else "audio/mpeg"
                    self._reply(200, fake.recording_audio, kind)

            def _reply(self, status: int, payload: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)

    def fail_next(self, code: int, message: str = "", *, status: int = 400) -> None:
        """Answer the next request with Twilio error ``code`` (HTTP ``status``)."""
        self._failures.append((status, code, message or f"Twilio error {code}"))

    def _authorized(self, request: TwilioRequest, account: str) -> bool:
        expected = base64.b64encode(f"{account}:{self.auth_token}".encode()).decode()
        return request.headers.get("Authorization", "") == f"Basic {expected}"

    def _answer(self, request: TwilioRequest) -> tuple[int, dict[str, Any]]:
        if self._failures:
            status, code, message = self._failures.pop(0)
            return status, {"code": code, "message": message, "status": status,
                            "more_info": f"https://www.twilio.com/docs/errors/{code}"}
        if self.body is not None:
            return self.status, self.body
        path = urllib.parse.urlsplit(request.path).path
        created = _CALLS_PATH.match(path)
        if created:
            call = PlacedCall(_sid("CA"), created["account"], request.form)
            with self._changed:
                self.calls[call.sid] = call
            resource = self.call_resource(
                f"/2010-04-01/Accounts/{call.account_sid}/Calls/{call.sid}.json", "queued"
            )
            resource.update({"to": call.to, "from": call.from_, "direction": "outbound-api"})
            return 201, resource
        recording = _RECORDINGS_PATH.match(path)
        if recording:
            started = StartedRecording(
                _sid("RE"), recording["account"], recording["call"], request.form
            )
            with self._changed:
                self.recordings[started.sid] = started
            return 201, {
                "sid": started.sid, "account_sid": started.account_sid,
                "call_sid": started.call_sid, "status": "in-progress",
                "channels": 2 if started.param("RecordingChannels") == "dual" else 1,
                "uri": f"/2010-04-01/Accounts/{started.account_sid}/Calls/{started.call_sid}"
                       f"/Recordings/{started.sid}.json",
            }
        return self.status, self.call_resource(request.path)

    @staticmethod
    def call_resource(path: str, status: str = "in-progress") -> dict[str, Any]:
        match = _CALL_PATH.search(path)
        account = match["account"] if match else "AC" + "0" * 32
        call = match["call"] if match else "CA" + "0" * 32
        return {"sid": call, "account_sid": account, "status": status,
                "uri": f"/2010-04-01/Accounts/{account}/Calls/{call}.json"}

    def wait_for_requests(self, count: int = 1, timeout: float = 5.0) -> list[TwilioRequest]:
        """Block until ``count`` requests arrived (call it in a thread from async code)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self.requests)} Twilio API requests, wanted {count}")
                self._changed.wait(left)
            return list(self.requests)

    async def wait_for_call(self, index: int = 0, timeout: float = 10.0) -> PlacedCall:
        """The ``index``-th call created through the API, once it was."""
        deadline = time.monotonic() + timeout
        while len(self.calls) <= index:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.calls)} calls placed, wanted {index + 1}")
            await asyncio.sleep(0.02)
        return list(self.calls.values())[index]

    async def wait_for_recording(self, index: int = 0, timeout: float = 10.0) -> StartedRecording:
        """The ``index``-th recording started through the API, once it was."""
        deadline = time.monotonic() + timeout
        while len(self.recordings) <= index:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.recordings)} recordings, wanted {index + 1}")
            await asyncio.sleep(0.02)
        return list(self.recordings.values())[index]

    def conference_members(self, name: str) -> list[str]:
        """CallSids sent into conference ``name`` by TwiML (a call created with it, or a live
        call updated to it), in the order the requests came; Twilio's view of who joins."""
        members: list[str] = []
        for request in list(self.requests):
            twiml = (request.form.get("Twiml") or [""])[0]
            if "<Conference" not in twiml:
                continue
            rooms = [c.text for c in ET.fromstring(twiml).iter("Conference")]
            if name not in rooms:
                continue
            path = urllib.parse.urlsplit(request.path).path
            updated = _CALL_PATH.search(path)
            if updated:
                members.append(updated["call"])
                continue
            for call in list(self.calls.values()):
                if call.form is request.form or call.form == request.form:
                    members.append(call.sid)
                    break
        return members

    # ------------------------------------------------------------------ Twilio's callbacks

    def _app_url(self, public: str) -> str:
        """Where a callback URL given to Twilio (public) is delivered on loopback."""
        if self.public_url and public.startswith(self.public_url.rstrip("/")):
            return self.app_url.rstrip("/") + public[len(self.public_url.rstrip("/")):]
        return public

    async def post_callback(self, url: str, form: dict[str, str], timeout: float = 10.0) -> int:
        """POST ``form`` to ``url`` (a public URL) as Twilio does, signed; the HTTP status."""
        headers = {"Content-Type": "application/x-www-form-urlencoded",
                   "User-Agent": "TwilioProxy/1.1"}
        if self.auth_token:
            headers["X-Twilio-Signature"] = RequestValidator(self.auth_token).compute_signature(
                url, form
            )
        body = urllib.parse.urlencode(form).encode()
        status, _ = await asyncio.to_thread(_post, self._app_url(url), body, headers, timeout)
        self.callbacks.append((url, dict(form), status))
        return status

    def _call_form(self, call: PlacedCall, status: str) -> dict[str, str]:
        return {
            "AccountSid": call.account_sid, "ApiVersion": "2010-04-01", "CallSid": call.sid,
            "CallStatus": status, "Direction": "outbound-api", "From": call.from_,
            "To": call.to, "Called": call.to, "Caller": call.from_,
        }

    async def send_status(self, call_sid: str, status: str, *, duration: int | None = None) -> int:
        """The call's status callback (``ringing``, ``in-progress``, ``completed``, …)."""
        call = self.calls[call_sid]
        call.status = status
        url = call.param("StatusCallback")
        if not url:
            raise AssertionError(f"call {call_sid} was placed without a StatusCallback")
        form = self._call_form(call, status)
        if duration is not None:
            form["CallDuration"] = str(duration)
        return await self.post_callback(url, form)

    async def answer(self, call_sid: str, **client_kwargs: Any) -> TwilioStreamClient:
        """The callee picks up: fetch the answer URL (signed, as Twilio does) and return a
        :class:`~voiceconv.testing.TwilioStreamClient` for the stream its TwiML opens."""
        # Imported here, not at the top: that module imports this one (a cycle at import time).
        from voiceconv.testing.twilio_client import TwilioStreamClient

        call = self.calls[call_sid]
        url = call.param("Url")
        if not url:
            raise AssertionError(f"call {call_sid} was placed without a Url")
        if call.param("StatusCallback"):
            await self.send_status(call_sid, "ringing")
        call.status = "in-progress"
        parts = urllib.parse.urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        public = f"{parts.scheme}://{parts.netloc}"
        client = await TwilioStreamClient.from_webhook(
            self._app_url(public),
            webhook_path=path,
            form=self._call_form(call, "in-progress"),
            auth_token=self.auth_token or None,
            public_url=public,
            call_sid=call.sid,
            account_sid=call.account_sid,
            **client_kwargs,
        )
        if call.param("StatusCallback"):
            await self.send_status(call_sid, "in-progress")
        return client

    async def send_amd(self, call_sid: str, answered_by: str, *, duration_ms: int = 2400) -> int:
        """Twilio's asynchronous answering-machine verdict (``human``, ``machine_end_beep``…)."""
        call = self.calls[call_sid]
        url = call.param("AsyncAmdStatusCallback")
        if not url:
            raise AssertionError(f"call {call_sid} was placed without AsyncAmdStatusCallback")
        form = {"AccountSid": call.account_sid, "CallSid": call.sid, "AnsweredBy": answered_by,
                "MachineDetectionDuration": str(duration_ms)}
        return await self.post_callback(url, form)

    def __enter__(self) -> FakeTwilioAPI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
