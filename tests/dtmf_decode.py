"""A DTMF decoder for tests: Goertzel power at the eight DTMF frequencies, per 20 ms block of
μ-law 8 kHz audio (what Twilio's stand-in heard)."""

from __future__ import annotations

import math
import struct

from voiceconv.testing.audio import ulaw_decode

LOW = (697, 770, 852, 941)
HIGH = (1209, 1336, 1477, 1633)
KEYS = ("123A", "456B", "789C", "*0#D")
BLOCK = 160  # 20 ms


def goertzel(samples: list[float], freq: float, rate: int = 8000) -> float:
    coeff = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    return s2 * s2 + s1 * s1 - coeff * s1 * s2


def block_key(samples: list[float]) -> str | None:
    """The key one block is a tone of, or None (silence, speech, noise)."""
    energy = sum(x * x for x in samples)
    if energy < 1e-3 * len(samples):
        return None
    lows = [goertzel(samples, f) for f in LOW]
    highs = [goertzel(samples, f) for f in HIGH]
    lo, hi = max(range(4), key=lows.__getitem__), max(range(4), key=highs.__getitem__)
    # Both tones dominate their groups, and together they carry most of the block's energy
    # (Goertzel power of a pure tone of amplitude a over N samples is (a N / 2)^2).
    if any(p > lows[lo] / 10 for i, p in enumerate(lows) if i != lo):
        return None
    if any(p > highs[hi] / 10 for i, p in enumerate(highs) if i != hi):
        return None
    tone_energy = 2 * (lows[lo] + highs[hi]) / len(samples)
    if tone_energy < 0.8 * energy:
        return None
    return KEYS[lo][hi]


def decode(ulaw: bytes) -> str:
    """The key presses in ``ulaw``: runs of at least two blocks of one key, each run one press."""
    pcm = ulaw_decode(ulaw)
    values = [s / 32768 for (s,) in struct.iter_unpack("<h", pcm[: len(pcm) // 2 * 2])]
    keys: list[str | None] = [
        block_key(values[i:i + BLOCK]) for i in range(0, len(values) - BLOCK + 1, BLOCK)
    ]
    out, run_key, run = [], None, 0
    for key in [*keys, None]:
        if key == run_key:
            run += 1
            continue
        if run_key is not None and run >= 2:
            out.append(run_key)
        run_key, run = key, 1
    return "".join(out)
