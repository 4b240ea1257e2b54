"""Analysis of one level: matching what the callers sent with what the stand-in received and
back, the server's cost from ``/proc`` samples, and py-spy profile summaries."""

from __future__ import annotations

import collections
import contextlib
from bisect import bisect_left
from pathlib import Path
from typing import Any

from bench.common import cpu_seconds, percentiles
from bench.levels import LevelConfig, LevelResult

# --------------------------------------------------------------------------------------
# analysis
# --------------------------------------------------------------------------------------


def _cpu_of(pids: list[int]) -> float:
    total = 0.0
    for p in pids:
        with contextlib.suppress(OSError):
            total += cpu_seconds(p)
    return total


def _in(t: float, window: list[float]) -> bool:
    return window[0] <= t <= window[1]


def analyze(cfg: LevelConfig, gens: list[dict[str, Any]], standin: dict[str, Any],
            window: list[float], samples: dict[str, float]) -> LevelResult:
    """Match what the callers sent with what the stand-in received, and back."""
    res = LevelResult(server=cfg.server, n=cfg.n, window_s=cfg.duration,
                      preconnect=cfg.preconnect)
    calls = {c["index"]: c for g in gens for c in g["calls"]}
    for index in sorted(calls):
        call = calls[index]
        if call["error"]:
            res.errors.append(f"call {index}: {call['error']}")
    res.calls_ok = sum(1 for c in calls.values() if not c["error"])
    hooks = [c for c in calls.values() if c.get("webhook_answered_at")]
    res.webhooks_answered = len(hooks)
    res.webhook = percentiles(
        [(c["webhook_answered_at"] - c["webhook_sent_at"]) * 1000 for c in hooks]
    )
    res.ttfa = percentiles([
        (c["received"][0][0] - (c.get("webhook_sent_at") or c["started_at"])) * 1000
        for c in calls.values() if c["received"] and (c.get("webhook_sent_at") or c["started_at"])
    ])

    # ---- caller → OpenAI
    arrivals: dict[int, list[tuple[float, int]]] = collections.defaultdict(list)
    session_call: list[int | None] = []
    for s in standin["sessions"]:
        counts = collections.Counter(call for _, call, _ in s["appends"])
        session_call.append(counts.most_common(1)[0][0] if counts else None)
        for t, call, counter in s["appends"]:
            arrivals[call].append((t, counter))
    res.realtime_sessions = sum(1 for c in session_call if c is not None and c in calls)
    res.sessions_opened = len(standin["sessions"])
    up_lat: list[float] = []
    for index, call in calls.items():
        sent = call["sent"]
        res.frames_up += len(sent)
        seen: set[int] = set()
        last = -1
        for t, counter in arrivals.get(index, []):
            if counter in seen:
                res.duplicated_up += 1
                continue
            seen.add(counter)
            if counter < last:
                res.reordered_up += 1
            last = max(last, counter)
            if counter < len(sent) and _in(sent[counter], window):
                up_lat.append((t - sent[counter]) * 1000)
        res.lost_up += sum(1 for k in range(len(sent)) if k not in seen)
    res.up = percentiles(up_lat)

    # ---- OpenAI → caller, and barge-in
    down_lat: list[float] = []
    barge: list[float] = []
    min_clears: int | None = None
    for s, index in zip(standin["sessions"], session_call, strict=True):
        if index is None or index not in calls:
            continue
        call = calls[index]
        hangup = call["hangup_at"] or float("inf")
        muted: set[str] = set()
        created: list[str] = []
        expected: dict[int, tuple[int, float]] = {}
        muted_crcs: set[int] = set()
        starts: list[float] = []
        for t, kind, resp, crc in s["timeline"]:
            if kind == "c":
                created.append(resp)
            elif kind == "s":
                muted.update(created)
                starts.append(t)
            elif kind == "d":
                if resp in muted:
                    muted_crcs.add(crc)
                elif t < hangup - 0.25:
                    expected[crc] = (len(expected), t)
        last = -1
        matched: set[int] = set()
        for t, crc in call["received"]:
            hit = expected.get(crc)
            if hit is None:
                if crc in muted_crcs:
                    res.muted_delivered += 1
                elif t < hangup - 0.25:
                    res.unknown_down += 1
                continue
            position, t_sent = hit
            matched.add(crc)
            if position < last:
                res.reordered_down += 1
            last = max(last, position)
            if _in(t_sent, window):
                down_lat.append((t - t_sent) * 1000)
        res.deltas_down += len(expected)
        res.lost_down += len(expected) - len(matched)
        clears = sorted(call["clears"])
        min_clears = len(clears) if min_clears is None else min(min_clears, len(clears))
        res.clears += len(clears)
        for i, t in enumerate(starts):
            if not _in(t, window):
                continue
            res.speech_starts += 1
            until = starts[i + 1] if i + 1 < len(starts) else float("inf")
            j = bisect_left(clears, t)
            if j < len(clears) and clears[j] < until:
                barge.append((clears[j] - t) * 1000)
            else:
                res.barge_ins_without_clear += 1
    res.down = percentiles(down_lat)
    res.barge_in = percentiles(barge)
    res.min_clears_per_call = min_clears or 0

    # ---- server cost and the load side's health
    if "cpu0" in samples and "cpu1" in samples and cfg.n:
        cpu = samples["cpu1"] - samples["cpu0"]
        res.cpu_s_per_call_minute = cpu / (cfg.n * cfg.duration / 60)
        res.server_core_busy = cpu / cfg.duration
    if "rss_end" in samples and cfg.n:
        res.rss_mb = samples["rss_end"] / 2**20
        res.rss_per_call_kb = (samples["rss_end"] - samples.get("rss_base", 0)) / cfg.n / 1024
    if "load_cpu" in samples:
        res.load_core_busy = samples["load_cpu"] / cfg.duration
        res.standin_core_busy = samples["standin_cpu"] / cfg.duration
    server_core = samples.get(f"core{cfg.server_cpu}")
    if server_core is not None and "cpu1" in samples:
        res.foreign_on_server_core = max(0.0, server_core - (samples["cpu1"] - samples["cpu0"]))
        res.foreign_on_server_core /= cfg.duration
    load_core = samples.get(f"core{cfg.load_cpu}")
    if load_core is not None and "load_cpu" in samples:
        res.foreign_on_load_core = max(0.0, load_core - samples["load_cpu"]) / cfg.duration
    gen_lags = [lag for g in gens for t, lag in g["loop_lag"] if _in(t, window)]
    res.generator_lag = percentiles(gen_lags)
    res.standin_lag = percentiles([lag for t, lag in standin["loop_lag"] if _in(t, window)])
    return res


def summarize_profile(raw: str, top: int = 25) -> str:
    """Top functions by own time and by inclusive time from py-spy's raw (collapsed) output."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    areas: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f.strip() for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        own[_short(frames[-1])] += n
        areas[_area(frames)] += n
        for name in {_short(f) for f in frames}:
            incl[name] += n
    if not total:
        return "(no samples)"
    lines = [f"samples: {total}", "", "own time by area (leaf frame's package):"]
    lines += [f"  {100 * c / total:5.1f}%  {name}" for name, c in areas.most_common()]
    lines += ["", "own time (leaf frames):"]
    lines += [f"  {100 * c / total:5.1f}%  {name}" for name, c in own.most_common(top)]
    lines += ["", "inclusive time:"]
    lines += [f"  {100 * c / total:5.1f}%  {name}" for name, c in incl.most_common(top + 15)]
    return "\n".join(lines)


_AREAS = (
    ("voiceconv/", "voiceconv (the app's own code)"),
    ("django/db/", "Django ORM + database driver"),
    ("sqlite3/", "Django ORM + database driver"),
    ("psycopg", "Django ORM + database driver"),
    ("channels/", "Channels"),
    ("asgiref/", "asgiref (sync_to_async)"),
    ("django/", "Django (other)"),
    ("openai/", "openai SDK"),
    ("httpx", "openai SDK"),
    ("httpcore", "openai SDK"),
    ("websockets/", "websockets (framing, both legs)"),
    ("autobahn/", "daphne/twisted/autobahn"),
    ("twisted/", "daphne/twisted/autobahn"),
    ("daphne/", "daphne/twisted/autobahn"),
    ("uvicorn/", "uvicorn"),
    ("ssl.py", "TLS (ssl)"),
    ("json/", "json (stdlib)"),
    ("asyncio/", "asyncio event loop and transports"),
    ("selectors.py", "asyncio event loop and transports"),
    ("concurrent/futures", "thread pool"),
    ("threading.py", "thread pool"),
    ("logging/", "logging"),
)


def _area(frames: list[str]) -> str:
    """The area a sample's own time belongs to: its leaf frame's package (the caller's for
    stdlib helpers such as ``random``/``base64`` called from a library)."""
    for frame in reversed(frames):
        path = frame.rpartition(" (")[2]
        for key, area in _AREAS:
            if key in path:
                return area
    return "other"


def _short(frame: str) -> str:
    """``func (path/to/module.py:12)`` → ``func (module.py)``, dropping the line number."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if len(parts) >= 2 else path
    return f"{name} ({short})"
