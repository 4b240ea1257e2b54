"""Recorded clips a GPT-Live agent plays word for word (``session.output_audio.fixture.play``).

``VOICECONV["CLIPS"]`` names them, each a WAV file and optionally the words it says::

    VOICECONV = {"CLIPS": {
        "recording_notice": {"path": BASE_DIR / "clips/notice.wav",
                             "text": "This call is recorded for quality and training."},
        "hold": BASE_DIR / "clips/hold.wav",      # the path alone: no words recorded
    }}

An agent's *opening clip* names one: it plays as the call connects, before the greeting. A
clip is what GPT-Live plays whatever the session's audio format: mono 16-bit PCM at 24000 Hz,
at most 30 seconds (convert with ``ffmpeg -i in.wav -ac 1 -ar 24000 -sample_fmt s16 out.wav``).
A clip is read once per process, the first time a call needs it.
"""

from __future__ import annotations

import base64
import functools
import wave
from dataclasses import dataclass
from os import PathLike, fspath
from typing import Any

from voiceconv.conf import voiceconv_settings

__all__ = ["CLIP_MAX_SECONDS", "CLIP_RATE", "Clip", "ClipError", "clip_names", "load_clip"]

#: What ``session.output_audio.fixture.play`` takes: raw mono PCM16 little-endian at 24 kHz,
#: at most 30 seconds.
CLIP_RATE = 24000
CLIP_MAX_SECONDS = 30


class ClipError(ValueError):
    """A clip that is not configured or cannot be played (the message says why)."""


@dataclass(frozen=True, slots=True)
class Clip:
    """A clip ready to send: its name, base64 PCM16 24 kHz audio, words and length."""

    name: str
    audio: str
    text: str
    duration_ms: int


def clip_names() -> list[str]:
    """The names ``VOICECONV["CLIPS"]`` configures."""
    clips = voiceconv_settings.CLIPS
    return sorted(clips) if isinstance(clips, dict) else []


def _entry(name: str) -> tuple[str, str]:
    clips = voiceconv_settings.CLIPS
    entry: Any = clips.get(name) if isinstance(clips, dict) else None
    if entry is None:
        raise ClipError(f"no clip named {name!r} in VOICECONV CLIPS")
    if isinstance(entry, dict):
        path, text = entry.get("path"), str(entry.get("text") or "")
    else:
        path, text = entry, ""
    if not isinstance(path, str | PathLike):
        raise ClipError(f"clip {name!r}: give the path of a WAV file")
    return fspath(path), text


def load_clip(name: str) -> Clip:
    """The clip ``name`` of ``VOICECONV["CLIPS"]``, read and checked (:class:`ClipError`)."""
    path, text = _entry(name)
    audio, duration_ms = _read(path)
    return Clip(name=name, audio=audio, text=text, duration_ms=duration_ms)


@functools.lru_cache(maxsize=32)
def _read(path: str) -> tuple[str, int]:
    try:
        with wave.open(path, "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise ClipError(f"clip {path}: not a readable WAV file ({exc})") from None
    if (channels, width, rate) != (1, 2, CLIP_RATE):
        raise ClipError(
            f"clip {path}: {channels} channel(s), {8 * width}-bit, {rate} Hz; GPT-Live plays "
            f"mono 16-bit PCM at {CLIP_RATE} Hz (ffmpeg -i in.wav -ac 1 -ar {CLIP_RATE} "
            "-sample_fmt s16 out.wav)"
        )
    duration_ms = len(frames) * 1000 // (2 * CLIP_RATE)
    if not frames or duration_ms > CLIP_MAX_SECONDS * 1000:
        raise ClipError(
            f"clip {path}: {duration_ms / 1000:.1f} s; a clip plays 0-{CLIP_MAX_SECONDS} s"
        )
    return base64.b64encode(frames).decode("ascii"), duration_ms
