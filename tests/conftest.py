"""Shared fixtures: the example project served by a real ASGI server, the Realtime stand-in."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import wave
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connections
from django.test import Client
from twilio.request_validator import RequestValidator

from voiceconv.testing import FakeTwilioAPI, RealtimeStandIn
from voiceconv.testing.server import ServerProcess, free_port
from voiceconv.webhook_records import webhook_records
from voiceconv.writer import get_writer

from .db_faults import SQLiteLock

# The conversation-test plugin: the ``voiceconv_model`` fixture and the ``real_model`` marker.
pytest_plugins = ["voiceconv.testing.conversation"]

# The test process opens connections from short-lived executor threads: close them after each
# use (servers under test keep the project's persistent connections).
connections.settings["default"]["CONN_MAX_AGE"] = 0

ROOT = Path(__file__).resolve().parent.parent
#: What the example project thinks its public origin is; Twilio signs over this.
PUBLIC_URL = "https://voice.example.test"
AUTH_TOKEN = "test-auth-token-0123456789abcdef"
OPENAI_KEY = "sk-test-voiceconv"


def database_url() -> str:
    """The test database as a URL the server process can open."""
    from django.db import connection

    sd = connection.settings_dict
    if sd["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{sd['NAME']}"
    user = sd.get("USER") or ""
    password = f":{sd['PASSWORD']}" if sd.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{sd.get('HOST') or '127.0.0.1'}:{sd.get('PORT') or 5432}/{sd['NAME']}"


def run_without_django(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter at the repository's root, without
    ``DJANGO_SETTINGS_MODULE``: as a project's settings or app config module would import."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120, cwd=ROOT)


def post_as_twilio(path: str, form: Mapping[str, str], *, sign: bool = True) -> Any:
    """POST ``form`` to this process's view at ``path`` as Twilio does: signed with
    :data:`AUTH_TOKEN` over :data:`PUBLIC_URL` (the test's ``TWILIO_AUTH_TOKEN`` and
    ``PUBLIC_URL``), or unsigned with ``sign=False``; Django's test response."""
    headers = {}
    if sign:
        headers["HTTP_X_TWILIO_SIGNATURE"] = RequestValidator(AUTH_TOKEN).compute_signature(
            PUBLIC_URL + path, dict(form))
    return Client().post(path, dict(form), **headers)


@pytest.fixture(scope="session")
def standin_port() -> int:
    return free_port()


def write_pcm_wav(path: Path, pcm16: bytes, rate: int = 24000) -> Path:
    """A mono 16-bit PCM WAV file of ``pcm16`` at ``rate`` (a clip for ``VOICECONV["CLIPS"]``)."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm16)
    return path


def server_env(standin_port: int, **voiceconv: object) -> dict[str, str]:
    """Environment for a server process of the example project, talking to the stand-in."""
    import json

    env = {
        "DATABASE_URL": database_url(),
        "OPENAI_BASE_URL": f"http://127.0.0.1:{standin_port}/v1",
        "OPENAI_API_KEY": OPENAI_KEY,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
        "PUBLIC_URL": PUBLIC_URL,
        "DEBUG": "1",
        "VOICECONV_LOG_LEVEL": "DEBUG",
        # Tests let call time run faster than real time; the idle reprompt is tested alone.
        "VOICECONV_IDLE_REPROMPT_SECONDS": "0",
    }
    if os.environ.get("REDIS_URL"):
        env["REDIS_URL"] = os.environ["REDIS_URL"]
    for key, value in voiceconv.items():
        env[f"VOICECONV_{key}"] = json.dumps(value)
    return env


@pytest.fixture(scope="session")
def callback_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the e2e server's transcript callbacks (tests.toolapp.callbacks) write."""
    return tmp_path_factory.mktemp("callbacks") / "callbacks.jsonl"


@pytest.fixture(scope="session")
def e2e_server(
    django_db_setup: None,
    django_db_blocker: pytest.FixtureRequest,
    standin_port: int,
    callback_log: Path,
) -> Iterator[ServerProcess]:
    """The example project under daphne, its OpenAI side pointed at the stand-in's port."""
    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        env = server_env(
            standin_port,
            ON_USER_MESSAGE="tests.toolapp.callbacks.on_user_message",
            ON_ASSISTANT_MESSAGE="tests.toolapp.callbacks.on_assistant_message",
        )
    env["CALLBACK_LOG"] = str(callback_log)
    server = ServerProcess(env=env, cwd=ROOT)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        if os.environ.get("SHOW_SERVER_LOG"):
            print(server.log_text())


@pytest.fixture(scope="module")
def twilio_api() -> Iterator[FakeTwilioAPI]:
    """Twilio's REST API on loopback for this module's ``twilio_server``; the callbacks it
    posts are signed with the server's auth token over its public URL."""
    with FakeTwilioAPI(auth_token=AUTH_TOKEN, public_url=PUBLIC_URL) as api:
        yield api


@pytest.fixture(scope="module")
def server_settings() -> dict[str, object]:
    """``VOICECONV`` settings of this module's ``twilio_server``: a module overrides it."""
    return {}


@pytest.fixture(scope="module")
def server_environ() -> dict[str, str]:
    """Further environment of this module's ``twilio_server``: a module overrides it."""
    return {}


@pytest.fixture(scope="module")
def twilio_server(
    django_db_setup: None,
    django_db_blocker: pytest.FixtureRequest,
    standin_port: int,
    twilio_api: FakeTwilioAPI,
    server_settings: dict[str, object],
    server_environ: dict[str, str],
) -> Iterator[ServerProcess]:
    """The example project under daphne for one module, its Twilio REST API ``twilio_api``
    (which delivers its callbacks to it), with the module's ``server_settings``."""
    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        env = server_env(standin_port, TWILIO_API_BASE=twilio_api.url, **server_settings)
    env.update(server_environ)
    with ServerProcess(env=env, cwd=ROOT) as server:
        twilio_api.app_url = server.http_url
        yield server
        if os.environ.get("SHOW_SERVER_LOG"):
            print(server.log_text())


@pytest.fixture
async def standin(standin_port: int) -> AsyncIterator[RealtimeStandIn]:
    """A fresh Realtime stand-in on the port the e2e server talks to."""
    async with RealtimeStandIn(port=standin_port, api_key=OPENAI_KEY) as s:
        yield s


@pytest.fixture
async def hang_up_leftovers(standin: RealtimeStandIn) -> AsyncIterator[None]:
    """Hang up every call a test left open (``tests.e2e.track``) and let its OpenAI session
    close before the stand-in stops: no call outlives its test and reconnects into the next."""
    import contextlib
    import time

    from tests.e2e import OPEN

    OPEN.clear()
    yield
    for client in OPEN:
        with contextlib.suppress(Exception):
            await client.hang_up()
    OPEN.clear()
    deadline = time.monotonic() + 5
    while not all(s.closed.is_set() for s in standin.sessions) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


@pytest.fixture
def server_log(e2e_server: ServerProcess) -> Iterator[Callable[[], str]]:
    """The e2e server's log written during this test only."""
    start = len(e2e_server.log_text())
    yield lambda: e2e_server.log_text()[start:]


@pytest.fixture(autouse=True)
def _close_thread_connections() -> Iterator[None]:
    """Close the connection the async ORM opened in asgiref's shared thread, so the test
    database can be dropped at the end (PostgreSQL refuses while sessions are open)."""
    yield
    from asgiref.sync import sync_to_async
    from django.db import connections

    asyncio.run(sync_to_async(connections.close_all)())


@pytest.fixture(autouse=True)
def _webhook_rows_written() -> Iterator[None]:
    """The incoming-call webhook's row is written off its response path, by the process-wide
    writer: wait for it at the end of the test, before the test database is flushed, so that no
    row of this test lands in the next one."""
    yield
    writer = get_writer()
    deadline = time.monotonic() + 30
    while writer.pending_for(webhook_records) and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.fixture(autouse=True)
def _browser_required_in_ci(request: pytest.FixtureRequest) -> None:
    """In CI the browser tests must run: a missing Chromium is a failure, not a skip."""
    if request.node.get_closest_marker("browser") and os.environ.get("REQUIRE_BROWSER_TESTS"):
        assert Path("/usr/bin/chromium").exists(), "CI needs /usr/bin/chromium (apt: chromium)"


_ = settings


@pytest.fixture
def sqlite_lock() -> Iterator[SQLiteLock]:
    """A lock holder; the project's 20 s busy timeout is cut to 0.1 s for new connections,
    so that a lock of a few seconds is an outage (errors) rather than a wait."""
    options = connections.settings["default"].setdefault("OPTIONS", {})
    saved = options.get("timeout")
    options["timeout"] = 0.1
    lock = SQLiteLock()
    yield lock
    lock.close()
    if saved is None:
        options.pop("timeout", None)
    else:
        options["timeout"] = saved
