"""G.711 μ-law helpers for tests (stdlib only; ``audioop`` is gone in Python 3.13).

All μ-law audio here is 8 kHz mono: one byte per sample, 8 bytes per millisecond,
160 bytes per 20 ms Twilio frame.
"""

from __future__ import annotations

import math
import random
import shutil
import subprocess
import sys
from array import array

__all__ = [
    "BYTES_PER_MS",
    "FRAME_BYTES",
    "SAMPLE_RATE",
    "ULAW_SILENCE",
    "espeak_ulaw",
    "frames",
    "pcm16_rms",
    "rms",
    "silence",
    "speech_like",
    "tone",
    "ulaw_decode",
    "ulaw_encode",
]

SAMPLE_RATE = 8000
BYTES_PER_MS = 8
FRAME_BYTES = 160
ULAW_SILENCE = 0xFF

_BIAS = 0x84
_CLIP = 32635


def _encode_sample(sample: int) -> int:
    sign = 0x80 if sample < 0 else 0
    magnitude = min(-sample if sign else sample, _CLIP) + _BIAS
    exponent = max(0, (magnitude >> 7).bit_length() - 1)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def _decode_byte(byte: int) -> int:
    byte = ~byte & 0xFF
    exponent = (byte >> 4) & 0x07
    magnitude = ((((byte & 0x0F) << 3) + _BIAS) << exponent) - _BIAS
    return -magnitude if byte & 0x80 else magnitude


# Encode table indexed by the unsigned 16-bit view of a sample; decode table by μ-law byte.
_ENCODE = bytes(_encode_sample(u - 65536 if u >= 32768 else u) for u in range(65536))
_DECODE = tuple(_decode_byte(b) for b in range(256))


def ulaw_encode(pcm16: bytes) -> bytes:
    """Encode little-endian signed 16-bit PCM to G.711 μ-law (same rate, one byte per sample)."""
    if len(pcm16) % 2:
        pcm16 = pcm16[:-1]
    samples = array("H")
    samples.frombytes(pcm16)
    if sys.byteorder == "big":
        samples.byteswap()
    return bytes(map(_ENCODE.__getitem__, samples))


def ulaw_decode(ulaw: bytes) -> bytes:
    """Decode G.711 μ-law to little-endian signed 16-bit PCM."""
    samples = array("h", map(_DECODE.__getitem__, ulaw))
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()


def _encode_samples(samples: list[float]) -> bytes:
    """Encode float samples in -1..1 straight to μ-law."""
    return bytes(_ENCODE[max(-32768, min(32767, round(s * 32767))) & 0xFFFF] for s in samples)


def silence(ms: int) -> bytes:
    """``ms`` milliseconds of μ-law digital silence (``0xFF``)."""
    return bytes([ULAW_SILENCE]) * (max(0, ms) * BYTES_PER_MS)


def tone(ms: int, freq: float = 440.0, amplitude: float = 0.3) -> bytes:
    """A μ-law sine tone of ``ms`` milliseconds; ``amplitude`` is a fraction of full scale."""
    n = max(0, ms) * BYTES_PER_MS
    step = 2 * math.pi * freq / SAMPLE_RATE
    return _encode_samples([amplitude * math.sin(step * i) for i in range(n)])


def speech_like(ms: int, seed: int = 0) -> bytes:
    """Voiced, speech-like μ-law audio: harmonics of a wandering pitch, syllable envelope, noise.

    Deterministic for a given ``seed``; every 20 ms window sits far above a VAD energy
    threshold (RMS roughly 0.1-0.3 of full scale), and different seeds give different bytes.
    """
    rng = random.Random(seed)
    n = max(0, ms) * BYTES_PER_MS
    pitch = 110.0 + rng.random() * 80.0
    syllable_hz = 3.0 + rng.random() * 2.0
    phase = 0.0
    out: list[float] = []
    for i in range(n):
        t = i / SAMPLE_RATE
        f0 = pitch * (1.0 + 0.08 * math.sin(2 * math.pi * 0.7 * t))
        phase += 2 * math.pi * f0 / SAMPLE_RATE
        voiced = (
            math.sin(phase)
            + 0.5 * math.sin(2 * phase)
            + 0.3 * math.sin(3 * phase)
            + 0.2 * math.sin(5 * phase)
        )
        envelope = 0.6 + 0.4 * math.sin(2 * math.pi * syllable_hz * t)
        out.append(0.22 * envelope * voiced + 0.04 * (rng.random() * 2 - 1))
    return _encode_samples(out)


def pcm16_rms(pcm16: bytes) -> float:
    """RMS of little-endian 16-bit PCM as a fraction (0..1) of full scale."""
    samples = array("h")
    samples.frombytes(pcm16[: len(pcm16) - len(pcm16) % 2])
    if not samples:
        return 0.0
    if sys.byteorder == "big":
        samples.byteswap()
    return math.sqrt(sum(s * s for s in samples) / len(samples)) / 32768.0


def rms(ulaw: bytes) -> float:
    """RMS of μ-law audio (decoded) as a fraction (0..1) of full scale; 0.0 for no audio."""
    if not ulaw:
        return 0.0
    return math.sqrt(sum(_DECODE[b] ** 2 for b in ulaw) / len(ulaw)) / 32768.0


def frames(audio: bytes, frame_bytes: int = FRAME_BYTES) -> list[bytes]:
    """Split audio into ``frame_bytes`` chunks (the last one may be shorter)."""
    if frame_bytes <= 0:
        raise ValueError("frame_bytes must be positive")
    return [audio[i : i + frame_bytes] for i in range(0, len(audio), frame_bytes)]


def espeak_ulaw(text: str, *, voice: str = "en-us", timeout: float = 20.0) -> bytes | None:
    """Synthesise ``text`` as 8 kHz μ-law with ``espeak-ng`` and ``sox``.

    Returns ``None`` when either binary is missing from ``PATH`` or synthesis fails.
    """
    espeak, sox = shutil.which("espeak-ng"), shutil.which("sox")
    if espeak is None or sox is None:
        return None
    try:
        wav = subprocess.run(
            [espeak, "-v", voice, "--stdout", text],
            capture_output=True,
            check=True,
            timeout=timeout,
        ).stdout
        raw = subprocess.run(
            [
                sox,
                "-q",
                "-t",
                "wav",
                "-",
                "-t",
                "raw",
                "-r",
                str(SAMPLE_RATE),
                "-c",
                "1",
                "-e",
                "mu-law",
                "-b",
                "8",
                "-",
            ],
            input=wav,
            capture_output=True,
            check=True,
            timeout=timeout,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return raw or None
