"""Tests for the μ-law helpers in ``voiceconv.testing.audio``."""

from __future__ import annotations

import math
import shutil
import struct

import pytest

from voiceconv.testing.audio import (
    ULAW_SILENCE,
    espeak_ulaw,
    frames,
    pcm16_rms,
    rms,
    silence,
    speech_like,
    tone,
    ulaw_decode,
    ulaw_encode,
)


def _samples(pcm: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(pcm) // 2}h", pcm))


def test_decode_matches_g711_reference_points() -> None:
    decoded = _samples(ulaw_decode(bytes([0x00, 0x80, 0xFF, 0x7F, 0x0F, 0x8F, 0x70, 0xF0])))
    # Reference values of the ITU-T G.711 μ-law expansion (as audioop produced them).
    assert decoded == [-32124, 32124, 0, 0, -16764, 16764, -120, 120]


def test_encode_extremes_and_zero() -> None:
    pcm = struct.pack("<6h", 0, 32767, -32768, 2, -2, 8)
    assert ulaw_encode(pcm) == bytes([0xFF, 0x80, 0x00, 0xFF, 0x7F, 0xFE])


def test_decode_then_encode_is_identity_except_negative_zero() -> None:
    every = bytes(range(256))
    back = ulaw_encode(ulaw_decode(every))
    assert [(a, b) for a, b in zip(every, back, strict=True) if a != b] == [(0x7F, 0xFF)]


def test_encode_is_monotonic_over_the_full_range() -> None:
    pcm = struct.pack(f"<{65536 // 64}h", *range(-32768, 32768, 64))
    values = _samples(ulaw_decode(ulaw_encode(pcm)))
    assert values == sorted(values)
    # Quantisation error stays within one μ-law step (at most 1/32 of the value, plus bias).
    for original, got in zip(range(-32768, 32768, 64), values, strict=True):
        assert abs(original - got) <= abs(original) / 16 + 132


def test_encode_ignores_a_trailing_odd_byte() -> None:
    assert ulaw_encode(b"\x00\x00\x01") == b"\xff"


def test_silence_is_0xff_eight_bytes_per_ms() -> None:
    assert ULAW_SILENCE == 0xFF
    assert silence(20) == b"\xff" * 160
    assert silence(0) == b""
    assert rms(silence(100)) == 0.0


def test_tone_length_and_level() -> None:
    audio = tone(100, freq=1000.0, amplitude=0.5)
    assert len(audio) == 800
    assert rms(audio) == pytest.approx(0.5 / math.sqrt(2), rel=0.05)
    assert rms(tone(100, amplitude=0.05)) < rms(tone(100, amplitude=0.3))


def test_speech_like_is_loud_in_every_window_and_seeded() -> None:
    audio = speech_like(1000, seed=3)
    assert len(audio) == 8000
    assert min(rms(window) for window in frames(audio)) > 0.03
    assert speech_like(200, seed=3) == audio[:1600]
    assert speech_like(200, seed=4) != speech_like(200, seed=3)


def test_rms_of_empty_and_pcm16_rms() -> None:
    assert rms(b"") == 0.0
    assert pcm16_rms(b"") == 0.0
    assert pcm16_rms(struct.pack("<2h", 16384, -16384)) == pytest.approx(0.5)


def test_frames_splits_and_keeps_the_tail() -> None:
    chunks = frames(bytes(range(200)) + bytes(200), frame_bytes=160)
    assert [len(c) for c in chunks] == [160, 160, 80]
    assert b"".join(chunks) == bytes(range(200)) + bytes(200)
    with pytest.raises(ValueError):
        frames(b"x", frame_bytes=0)


@pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None,
    reason="espeak-ng and sox are not both on PATH",
)
def test_espeak_ulaw_synthesises_audible_speech() -> None:
    audio = espeak_ulaw("Hello, I would like to check my order.")
    assert audio is not None
    assert len(audio) > 8000  # more than a second at 8 kHz
    assert rms(audio) > 0.02


def test_espeak_ulaw_returns_none_without_binaries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert espeak_ulaw("hello") is None
