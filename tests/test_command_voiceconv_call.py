"""``manage.py voiceconv_call`` end to end: a real command process serving the project in its
own process (uvicorn on loopback: the signed webhook, a real WebSocket), the stand-in; its clean
stop on Ctrl-C, and its clear refusals (bad WAV, no key, no server)."""

from __future__ import annotations

import math
import os
import re
import signal
import struct
import subprocess
import sys
import time
import wave
from pathlib import Path

import pytest

from tests.conftest import ROOT, database_url
from voiceconv.models import Call, TranscriptEntry
from voiceconv.testing import free_port, rms
from voiceconv.testing.audio import ulaw_encode

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def command_env(**env: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    environ.update(DATABASE_URL=database_url(), DJANGO_SETTINGS_MODULE="project.settings", **env)
    return environ


def run_command(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "voiceconv_call", *args], cwd=ROOT, env=command_env(**env),
        capture_output=True, text=True, timeout=timeout,
    )


def start_command(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "manage.py", "voiceconv_call", *args], cwd=ROOT, env=command_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def stereo_cd_wav(path: Path, seconds: float = 1.0) -> Path:
    """A 44.1 kHz stereo tone: the command resamples and mixes it down."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(44100)
        wav.writeframes(b"".join(
            struct.pack("<h", int(9000 * math.sin(2 * math.pi * 330 * i / 44100))) * 2
            for i in range(int(44100 * seconds))
        ))
    return path


def test_a_call_against_the_standin(tmp_path: Path) -> None:
    reply = tmp_path / "reply.wav"
    proc = start_command("--standin", "--say", "What time is it?",
                         "--wav", str(stereo_cd_wav(tmp_path / "cd.wav")), "--dtmf", "1",
                         "--record", str(reply))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "served in this process" in out
    assert "> What time is it?" in out and "answered after" in out
    assert f"> {tmp_path / 'cd.wav'}" in out
    assert "time to first audio:" in out
    transcript = out.split("transcript:", 1)[1]
    assert "caller: hello" in transcript  # the stand-in's transcript of the caller
    assert "assistant: Hello! How can I help you today?" in transcript
    assert "dtmf: 1" in transcript
    with wave.open(str(reply), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels()) == (8000, 1)
        audio = ulaw_encode(wav.readframes(wav.getnframes()))
    assert len(audio) > 8000 and rms(audio) > 0.01  # more than a second, and not silence
    # The call was held by the command's own process (no server process of its own), and
    # recorded before the command exited.
    call_sid = re.search(r"call (CA\w+) connected", out).group(1)  # type: ignore[union-attr]
    call = Call.objects.get(twilio_call_sid=call_sid)
    assert call.live_process.endswith(f":{proc.pid}"), call.live_process
    assert call.ended_at is not None and call.end_reason == "caller_hung_up"
    assert TranscriptEntry.objects.filter(call=call, role="dtmf", text="1").exists()


def test_ctrl_c_hangs_up_and_the_call_is_recorded() -> None:
    proc = start_command("--standin", "--say", "What time is it?", "--say", "And tomorrow?",
                         "--timeout", "60")
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    seen = ""
    while "connected" not in seen and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
    match = re.search(r"call (CA\w+) connected", seen)
    assert match, seen + proc.communicate(timeout=30)[1]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert f"interrupted (SIGINT): call {match.group(1)} hung up and recorded" in err
    assert "Traceback" not in err
    call = Call.objects.get(twilio_call_sid=match.group(1))
    assert call.ended_at is not None  # finalised before the command exited


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
