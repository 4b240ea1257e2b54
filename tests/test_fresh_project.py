"""Done when: a brand-new ``startproject`` project, set up by following the README alone, makes
a simulated call whose record has the right agent, the tools, the greeting and the turns in
order."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from voiceconv.testing import (
    RealtimeStandIn,
    ScriptedFunctionCall,
    ScriptedResponse,
    ServerProcess,
    TwilioStreamClient,
    silence,
    speech_like,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(240)]

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
TOKEN = "fresh-project-token"
PUBLIC = "https://voice.example.com"


def block(after: str, first_line: str) -> str:
    """The README's Python block that starts with ``first_line``, in the section ``after``."""
    section = README.split(after, 1)[1]
    for code in re.findall(r"```python\n(.*?)```", section, re.S):
        if code.startswith(first_line):
            return code
    raise AssertionError(f"no README block starting {first_line!r} after {after!r}")


def build_project(root: Path) -> None:
    """startproject, startapp, then the README's settings, urls, asgi and tools, as written."""
    run = {"cwd": root, "check": True, "capture_output": True}
    subprocess.run([sys.executable, "-m", "django", "startproject", "fresh", "."], **run)
    subprocess.run([sys.executable, "manage.py", "startapp", "shop"], **run)
    using = "## Using voiceconv in your project"
    settings = block(using, "# settings.py")
    assert '    "voiceconv",\n]' in settings
    # INSTALLED_APPS as the README lists it, around startproject's django.contrib apps.
    settings = re.sub(
        r"INSTALLED_APPS = \[.*?\n\]\n",
        'INSTALLED_APPS = ["daphne", *INSTALLED_APPS, "channels", "voiceconv", "shop"]\n',
        settings, count=1, flags=re.S,
    )
    settings = settings.replace("yourproject", "fresh")
    settings = settings.replace('OPENAI_API_KEY = "..."', 'OPENAI_API_KEY = "sk-fresh"')
    settings = settings.replace('TWILIO_AUTH_TOKEN = "..."', f'TWILIO_AUTH_TOKEN = "{TOKEN}"')
    redis_url = os.environ.get("REDIS_URL")
    if redis_url:
        settings = settings.replace("redis://127.0.0.1:6379/0", redis_url)
    else:  # the README's layer needs Redis; without it the in-memory layer (one process)
        settings += (
            '\nCHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}\n'
        )
    with (root / "fresh" / "settings.py").open("a") as f:
        f.write("\n" + settings)
    (root / "fresh" / "urls.py").write_text(block(using, "# urls.py"))
    asgi = block(using, "# asgi.py").replace("yourproject", "fresh")
    (root / "fresh" / "asgi.py").write_text(asgi)
    tools = block("### Writing a tool", "# yourapp/tools.py")
    (root / "shop" / "tools.py").write_text(tools)


def query(db: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, args).fetchall()


async def test_a_fresh_project_following_the_readme_records_a_true_call(tmp_path: Path) -> None:
    build_project(tmp_path)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "fresh.settings", "PYTHONPATH": str(tmp_path)}
    env.pop("DATABASE_URL", None)
    migrate = subprocess.run([sys.executable, "manage.py", "migrate"], cwd=tmp_path, env=env,
                             capture_output=True, text=True)
    assert migrate.returncode == 0, migrate.stderr
    assert "Created the default agent (offering check_stock, lookup_order)" in migrate.stdout
    db = tmp_path / "db.sqlite3"

    async with RealtimeStandIn(api_key="sk-fresh") as standin:
        standin.responses.extend([
            ScriptedResponse(text="Hello, this is the shop."),
            ScriptedResponse(text="", function_calls=[
                ScriptedFunctionCall("lookup_order", {"order_id": "42"})
            ]),
            ScriptedResponse(text="Order 42 has shipped."),
        ])
        standin.caller_transcripts.append("Where is order 42?")
        server_env = {"OPENAI_BASE_URL": standin.base_url, "OPENAI_API_KEY": "sk-fresh",
                      "DJANGO_SETTINGS_MODULE": "fresh.settings", "PYTHONPATH": str(tmp_path)}
        with ServerProcess("fresh.asgi:application", cwd=tmp_path, env=server_env) as server:
            try:
                client = await TwilioStreamClient.from_webhook(
                    server.http_url, auth_token=TOKEN, public_url=PUBLIC,
                    form={"From": "+14155550123", "To": "+14155550100"},
                )
                await client.start_call()
                session = await standin.wait_for_session(timeout=20)
                update = await session.expect_event("session.update", timeout=10)
                tools = {t["name"] for t in update["session"].get("tools", [])}
                assert tools == {"lookup_order", "check_stock"}
                await client.wait_for_media(timeout=10)
                await client.wait_for_playback()
                greeted = client.received_bytes
                await client.send_audio(speech_like(800) + silence(800))
                await client.wait_for_media(greeted + 1, timeout=15)
                await client.wait_for_playback()
                assert session.protocol_violations == []
                await client.hang_up()
            finally:
                log = server.log_text()
            deadline = time.monotonic() + 20
            while not query(db, "SELECT id FROM voiceconv_call WHERE ended_at IS NOT NULL"):
                assert time.monotonic() < deadline, log[-3000:]
                await asyncio.sleep(0.2)

    ((call_id, agent),) = query(
        db, "SELECT c.id, a.name FROM voiceconv_call c JOIN voiceconv_agent a ON a.id = c.agent_id"
    )
    assert agent == "Default agent"
    entries = query(db, "SELECT role, text FROM voiceconv_transcriptentry WHERE call_id = ? "
                        "ORDER BY sequence", call_id)
    assert entries[0] == ("assistant", "Hello, this is the shop."), entries
    assert [role for role, _ in entries[1:]] == ["caller", "tool", "assistant"], entries
    assert entries[1][1] == "Where is order 42?"
    assert entries[2][1].startswith("lookup_order(")
    assert entries[3][1] == "Order 42 has shipped."
    invocations = query(db, "SELECT tool_name, error FROM voiceconv_toolinvocation "
                            "WHERE call_id = ?", call_id)
    assert invocations == [("lookup_order", "")]
