"""A stand-in for Twilio's REST API on loopback: records requests, answers as told.

Point voiceconv at it with ``VOICECONV["TWILIO_API_BASE"] = api.url`` and assert on the
exact requests a hang-up or transfer makes::

    with FakeTwilioAPI() as api:
        ...
        request = api.requests[0]
        assert request.path == f"/2010-04-01/Accounts/{account}/Calls/{call}.json"
        assert request.form["Twiml"] == ["<Response><Dial>+14155550100</Dial></Response>"]
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs

__all__ = ["FakeTwilioAPI", "TwilioRequest"]

_CALL_PATH = re.compile(r"/2010-04-01/Accounts/(?P<account>AC\w+)/Calls/(?P<call>CA\w+)\.json")


@dataclass
class TwilioRequest:
    """One request the fake API received."""

    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, list[str]]
    at: float


@dataclass
class FakeTwilioAPI:
    """A threaded HTTP server answering Twilio REST calls with a call resource."""

    #: HTTP status to answer with, and the body (a call resource built from the path if None).
    status: int = 200
    body: dict[str, Any] | None = None
    requests: list[TwilioRequest] = field(default_factory=list)
    url: str = ""
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def start(self) -> FakeTwilioAPI:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode()
                request = TwilioRequest(
                    "POST", self.path, dict(self.headers.items()), parse_qs(raw), time.monotonic()
                )
                with fake._changed:  # recorded before the client can see the answer
                    fake.requests.append(request)
                    fake._changed.notify_all()
                body = fake.body if fake.body is not None else fake.call_resource(self.path)
                payload = json.dumps(body).encode()
                self.send_response(fake.status)
                self.send_header("Content-Type", "application/json")
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

    def __enter__(self) -> FakeTwilioAPI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
