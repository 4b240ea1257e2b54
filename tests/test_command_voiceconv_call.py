"""``manage.py voiceconv_call`` end to end: a real command process, the server it starts, the
stand-in; and its clear refusals (bad WAV, no key, no server)."""

from __future__ import annotations

import os
import subprocess
import sys
import wave
from pathlib import Path

import pytest

from tests.conftest import ROOT, database_url
from voiceconv.testing import free_port, rms
from voiceconv.testing.audio import ulaw_encode

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def run_command(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    environ.update(DATABASE_URL=database_url(), DJANGO_SETTINGS_MODULE="project.settings", **env)
    return subprocess.run(
        [sys.executable, "manage.py", "voiceconv_call", *args], cwd=ROOT, env=environ,
        capture_output=True, text=True, timeout=timeout,
    )


def test_a_call_against_the_standin(tmp_path: Path) -> None:
    reply = tmp_path / "reply.wav"
    done = run_command("--standin", "--say", "What time is it?", "--dtmf", "1",
                       "--record", str(reply))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "> What time is it?" in out and "answered after" in out
    assert "time to first audio:" in out
    transcript = out.split("transcript:", 1)[1]
    assert "caller: hello" in transcript  # the stand-in's transcript of the caller
    assert "assistant: Hello! How can I help you today?" in transcript
    assert "dtmf: 1" in transcript
    with wave.open(str(reply), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels()) == (8000, 1)
        audio = ulaw_encode(wav.readframes(wav.getnframes()))
    assert len(audio) > 8000 and rms(audio) > 0.01  # more than a second, and not silence


def test_a_bad_wav_is_refused_with_a_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    done = run_command("--standin", "--wav", str(bad))
    assert done.returncode != 0
    assert "bad WAV:" in done.stderr and "not a PCM WAV file" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_missing_key_is_refused_with_a_message() -> None:
    done = run_command("--say", "Hello")
    assert done.returncode != 0
    assert "OPENAI_API_KEY is not set" in done.stderr and "--standin" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unreachable_server_is_reported() -> None:
    done = run_command("--server", f"http://127.0.0.1:{free_port()}", "--say", "Hello")
    assert done.returncode != 0
    assert "server unreachable" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_call_to_a_gpt_live_agent_talks_to_the_gpt_live_standin() -> None:
    from voiceconv.models import Agent, Call

    agent = Agent.objects.get(is_default=True)
    agent.backend, agent.model, agent.greeting = Agent.Backend.GPT_LIVE, "", ""
    agent.save()
    done = run_command("--standin", "--say", "What time is it?")
    assert done.returncode == 0, done.stderr
    transcript = done.stdout.split("transcript:", 1)[1]
    assert "caller: hello" in transcript
    assert "assistant: Hello! How can I help you today?" in transcript
    call = Call.objects.order_by("-created_at").first()
    assert call is not None and call.model == "gpt-live-1"
    assert call.session_seconds and call.estimated_cost > 0  # priced from its seconds
