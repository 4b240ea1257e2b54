"""Helpers shared by the benchmark's processes: tagged audio frames, statistics, /proc readers.

Every caller frame carries a tag in its first ten μ-law bytes: the call index (16 bits) and the
frame counter (24 bits), one nibble per byte as ``0xF0 | nibble``. Those codes are the quietest
μ-law values (|sample| <= 120 of 32768), so a tagged silence frame stays far below any VAD
threshold, and the stand-in can tell from any ``append`` which call and which frame it is.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import os
import time
from collections.abc import Sequence
from typing import Any

TAG_BYTES = 10
FRAME_BYTES = 160
FRAME_MS = 20

try:  # orjson when installed (the dev group has it); json otherwise
    import orjson

    def dumps(obj: Any) -> bytes:
        """Serialise ``obj`` to JSON bytes."""
        return orjson.dumps(obj)

    loads = orjson.loads
except ImportError:  # pragma: no cover - orjson is a dev dependency
    import json

    def dumps(obj: Any) -> bytes:
        """Serialise ``obj`` to JSON bytes."""
        return json.dumps(obj, separators=(",", ":")).encode()

    loads = json.loads


def tag_frame(base: bytes, call: int, counter: int) -> bytes:
    """``base`` (one 160-byte frame) with ``(call, counter)`` written into its first bytes.

    ``call`` is 0..65534 (65535 would make plain silence look tagged).
    """
    value = ((call & 0xFFFF) << 24) | (counter & 0xFFFFFF)
    tag = bytes(0xF0 | ((value >> (4 * (TAG_BYTES - 1 - i))) & 0xF) for i in range(TAG_BYTES))
    return tag + base[TAG_BYTES:]


def read_tag(b64: str) -> tuple[int, int] | None:
    """``(call, counter)`` of a tagged frame's base64 payload, or None if it carries no tag."""
    try:
        head = base64.b64decode(b64[:16])[:TAG_BYTES]
    except (binascii.Error, ValueError, TypeError):
        return None
    if len(head) < TAG_BYTES or any(b & 0xF0 != 0xF0 for b in head):
        return None
    value = 0
    for b in head:
        value = (value << 4) | (b & 0xF)
    if value >> 24 == 0xFFFF:  # all 0xFF: plain silence, not a tag (call 65535 is never used)
        return None
    return value >> 24, value & 0xFFFFFF


def percentiles(values: Sequence[float]) -> dict[str, float | int | None]:
    """``n``, p50/p95/p99/max of ``values`` (nearest rank), in the unit given."""
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    data = sorted(values)
    n = len(data)

    def rank(p: float) -> float:
        return data[min(n - 1, max(0, math.ceil(p / 100 * n) - 1))]

    return {"n": n, "p50": rank(50), "p95": rank(95), "p99": rank(99), "max": data[-1]}


def cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    # after the ")" field 3 is state; utime and stime are fields 14 and 15 of the full line
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def core_busy_seconds() -> dict[int, float]:
    """Busy (non-idle, non-iowait) seconds of every CPU core since boot, from /proc/stat."""
    tick = os.sysconf("SC_CLK_TCK")
    busy: dict[int, float] = {}
    with open("/proc/stat", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("cpu") and line[3:4].isdigit():
                name, *values = line.split()
                v = [int(x) for x in values]
                busy[int(name[3:])] = (sum(v[:8]) - v[3] - v[4]) / tick
    return busy


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` in bytes (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


class LoopLag:
    """Measures how late an event loop wakes up: sleeps ``interval`` and records the overshoot."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.samples: list[tuple[float, float]] = []  # (monotonic time, lag in ms)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start sampling on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(self.interval)
            now = time.monotonic()
            self.samples.append((now, (now - t - self.interval) * 1000.0))

    async def stop(self) -> None:
        """Stop sampling."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def within(self, start: float, end: float) -> list[float]:
        """Lags (ms) sampled between ``start`` and ``end``."""
        return [lag for t, lag in self.samples if start <= t <= end]
