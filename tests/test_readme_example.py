"""The README's test-kit example, run as it is written, records a true call."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, database_url
from voiceconv.models import Call

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(120)]

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def readme_example() -> str:
    """The test-kit section's Python example, pointed at this repository's project."""
    section = README.split("## Testing your agent: the test kit", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert '"DATABASE_URL": "...",' in code and "yourproject.asgi:application" in code
    return code.replace('"DATABASE_URL": "...",', f'"DATABASE_URL": {database_url()!r},').replace(
        "yourproject.asgi:application", "project.asgi:application"
    )


@pytest.mark.django_db(transaction=True)
async def test_the_readme_example_records_a_true_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    namespace: dict[str, Any] = {}
    exec(compile(readme_example(), "README.md (test kit example)", "exec"), namespace)
    tests = [v for k, v in namespace.items() if k.startswith("test_") and callable(v)]
    assert len(tests) == 1
    started = time.monotonic()
    await tests[0]()
    wall_s = time.monotonic() - started

    deadline = time.monotonic() + 15
    while True:
        call = await Call.objects.filter(ended_at__isnull=False).order_by("-pk").afirst()
        if call is not None or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert call is not None, "the example's call was not recorded as ended"
    entries = [e async for e in call.transcript_entries.order_by("sequence")]
    roles = [e.role for e in entries]
    # The greeting, then the caller's turn, then the answer, in that order.
    record = [(e.role, e.text, e.offset_ms, e.interrupted, e.heard_ms) for e in entries]
    assert roles[0] == "assistant", record
    assert "caller" in roles and roles.index("caller") < len(roles) - 1, roles
    assert entries[-1].role == "assistant"
    assert entries[0].text == "Hello, Acme here." and entries[-1].text == "We open at nine."
    # Everything the caller was sent was played: no answer reads as interrupted.
    assert [e.interrupted for e in entries if e.role == "assistant"] == [False] * roles.count(
        "assistant"
    ), [(e.text, e.heard_ms, e.total_ms) for e in entries]
    # Offsets follow one another and fit within the call's duration.
    offsets = [e.offset_ms for e in entries]
    assert all(o is not None for o in offsets), offsets
    assert offsets == sorted(offsets)
    assert call.duration_seconds is not None
    assert offsets[-1] <= call.duration_seconds * 1000 <= wall_s * 1000
    assert call.end_reason == "caller_hung_up"
    assert re.fullmatch(r"CA[0-9a-f]{32}", call.twilio_call_sid)
