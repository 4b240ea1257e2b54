"""The bridge benchmark: N concurrent simulated calls against a real server process.

One command runs the sweep for the three servers and prints the table::

    uv run python -m bench.run                        # daphne, uvicorn, reference; N = 10..200
    uv run python -m bench.run --servers uvicorn --levels 50,100 --duration 20
    uv run python -m bench.run --plot docs/benchmarks.png --json /tmp/bench.json
    uv run python -m bench.run --profile daphne:50    # py-spy profile of the server under load

Per level: a fresh server process pinned to one core (``taskset -c 1``), the Realtime stand-in
(``bench.standin``) and the load generators (``bench.loadgen``) as processes of their own on the
other core; one warm-up call; then N calls entered through the signed webhook over a ramp,
a settle period, and the measured window. See ``docs/benchmarks.md`` for what is measured.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from bisect import bisect_left
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.common import core_busy_seconds, cpu_seconds, dumps, loads, percentiles, rss_bytes
from voiceconv.testing.server import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
AUTH_TOKEN = "bench-auth-token-0123456789abcdef"
OPENAI_KEY = "sk-bench"
PUBLIC_URL = "https://voice.bench.test"
SERVERS = ("daphne", "uvicorn", "reference")
WARMUP_CALL = 60000
#: A level passes when p99 caller→OpenAI stays under this with nothing lost or reordered.
P99_LIMIT_MS = 20.0


@dataclass
class LevelConfig:
    """How one level is run."""

    server: str
    n: int
    duration: float = 20.0  # measured window, seconds
    settle: float = 3.0
    drain: float = 1.5
    calls_per_generator: int = 100
    database_url: str = ""
    workdir: str = ""
    server_cpu: int | None = 1
    load_cpu: int | None = 0
    speed_factor: float = 5.0
    audio_ms: int = 4000
    tls: bool = False
    profile: bool = False
    warmup: bool = True

    @property
    def ramp(self) -> float:
        return max(1.0, self.n / 20)  # 20 new calls per second


@dataclass
class LevelResult:
    """The figures of one level (latencies in ms)."""

    server: str
    n: int
    window_s: float
    calls_ok: int = 0
    up: dict[str, Any] = field(default_factory=dict)
    down: dict[str, Any] = field(default_factory=dict)
    barge_in: dict[str, Any] = field(default_factory=dict)
    frames_up: int = 0
    lost_up: int = 0
    reordered_up: int = 0
    duplicated_up: int = 0
    deltas_down: int = 0
    lost_down: int = 0
    reordered_down: int = 0
    muted_delivered: int = 0
    unknown_down: int = 0
    realtime_sessions: int = 0  # more than n means the app reopened sessions
    speech_starts: int = 0
    clears: int = 0
    barge_ins_without_clear: int = 0
    min_clears_per_call: int = 0
    cpu_s_per_call_minute: float | None = None
    server_core_busy: float | None = None
    rss_per_call_kb: float | None = None
    rss_mb: float | None = None
    #: Fraction of a core used by the stand-in and generators, and by anything else (other
    #: processes on the machine) on the server's core and on the load core, in the window.
    load_core_busy: float | None = None
    standin_core_busy: float | None = None
    foreign_on_server_core: float | None = None
    foreign_on_load_core: float | None = None
    generator_lag: dict[str, Any] = field(default_factory=dict)
    standin_lag: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    profile: str = ""
    #: Calls whose records are whole after the level (nothing lost): a Call row that has
    #: ended and transcript entries numbered without a gap (None: not checked).
    records_ok: int | None = None
    record_problems: list[str] = field(default_factory=list)
    #: Of those, calls whose transcript has both a caller and an assistant turn (a call
    #: far past capacity may end before a reply or a transcript was produced).
    conversations_ok: int | None = None
    #: Seconds the server took to exit after SIGTERM (finalising every call).
    shutdown_s: float | None = None

    @property
    def lossless(self) -> bool:
        return (
            self.lost_up == self.reordered_up == self.duplicated_up == 0
            and self.lost_down == self.reordered_down == 0
            and self.calls_ok == self.n
            and self.records_ok in (None, self.n)
        )

    @property
    def passed(self) -> bool:
        p99 = self.up.get("p99")
        return self.lossless and p99 is not None and p99 < P99_LIMIT_MS


# --------------------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------------------


def _pin(cmd: list[str], cpu: int | None) -> list[str]:
    if cpu is None or not sys.platform.startswith("linux") or not shutil.which("taskset"):
        return cmd
    return ["taskset", "-c", str(cpu), *cmd]


class RelayProcess(ServerProcess):
    """The reference relay (``bench.reference_relay``) run like a :class:`ServerProcess`."""

    def __init__(self, openai_url: str, cafile: str | None = None, **kwargs: Any) -> None:
        super().__init__("bench.reference_relay", **kwargs)
        self.openai_url = openai_url
        self.cafile = cafile

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "bench.reference_relay", "--port", str(self.port),
               "--openai-url", self.openai_url, "--api-key", OPENAI_KEY]
        if self.cafile:
            cmd += ["--cafile", self.cafile]
        return _pin(cmd, self.cpu)


class StandInProcess:
    """``bench.standin`` in a process of its own; ``stop()`` returns its recordings."""

    def __init__(self, cfg: LevelConfig, out: Path, cert: tuple[str, str] | None) -> None:
        self.out = out
        cmd = [sys.executable, "-m", "bench.standin", "--port", "0", "--out", str(out),
               "--speed-factor", str(cfg.speed_factor), "--audio-ms", str(cfg.audio_ms)]
        if cert:
            cmd += ["--certfile", cert[0], "--keyfile", cert[1]]
        self.proc = subprocess.Popen(
            _pin(cmd, cfg.load_cpu), cwd=ROOT, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith(("http://", "https://")):
            self.proc.kill()
            raise RuntimeError(f"stand-in did not start: {line!r}")
        self.base_url = line

    def stop(self) -> dict[str, Any]:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        data: dict[str, Any] = loads(self.out.read_bytes())
        return data


def _run_generators(cfg: LevelConfig, plans: list[dict[str, Any]], workdir: Path,
                    tag: str, on_start: Any = None) -> list[dict[str, Any]]:
    """Start one ``bench.loadgen`` per plan, release them together, collect their output."""
    procs = []
    for i, plan in enumerate(plans):
        spec = workdir / f"{tag}-gen{i}.json"
        out = workdir / f"{tag}-gen{i}-out.json"
        spec.write_bytes(dumps(plan))
        proc = subprocess.Popen(
            _pin([sys.executable, "-m", "bench.loadgen", str(spec), str(out)], cfg.load_cpu),
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        procs.append((proc, out))
    try:
        return _release(procs, on_start)
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()


def _release(procs: list[tuple[subprocess.Popen[str], Path]],
             on_start: Any) -> list[dict[str, Any]]:
    for proc, _ in procs:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("load generator failed to start")
    t0 = time.monotonic() + 0.3
    for proc, _ in procs:
        assert proc.stdin is not None
        proc.stdin.write(f"{t0!r}\n")
        proc.stdin.flush()
    if on_start is not None:
        on_start(t0, [proc.pid for proc, _ in procs])
    results = []
    for proc, out in procs:
        proc.wait()
        if proc.returncode != 0:
            raise RuntimeError(f"load generator exited {proc.returncode}")
        results.append(loads(out.read_bytes()))
    return results


def _plan(cfg: LevelConfig, calls: list[int], total: int, http_url: str, ws_url: str,
          ramp: float, audio_s: float, drain: float) -> dict[str, Any]:
    return {
        "calls": calls,
        "mode": "direct" if cfg.server == "reference" else "webhook",
        "http_url": http_url,
        "ws_url": ws_url,
        "auth_token": AUTH_TOKEN,
        "public_url": PUBLIC_URL,
        "ramp_s": ramp,
        "audio_s": audio_s,
        "drain_s": drain,
        "total_calls": total,
    }


def make_cert(workdir: Path) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (openssl), for TLS on the OpenAI leg."""
    cert, key = workdir / "standin-cert.pem", workdir / "standin-key.pem"
    if not cert.exists():
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
             "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True,
        )
    return str(cert), str(key)


def run_level(cfg: LevelConfig) -> LevelResult:
    """Run one level end to end and return its figures."""
    workdir = Path(cfg.workdir or tempfile.mkdtemp(prefix="voiceconv-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    tag = f"{cfg.server}-{cfg.n}"
    cert = make_cert(workdir) if cfg.tls else None
    standin = StandInProcess(cfg, workdir / f"{tag}-standin.json", cert)
    server: ServerProcess | None = None
    samples: dict[str, float] = {}
    try:
        env = {
            "DATABASE_URL": cfg.database_url,
            "OPENAI_BASE_URL": standin.base_url,
            "OPENAI_API_KEY": OPENAI_KEY,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
            "PUBLIC_URL": PUBLIC_URL,
            "DEBUG": "0",
            "ALLOWED_HOSTS": "*",
            "VOICECONV_LOG_LEVEL": "WARNING",
        }
        if cert:
            env["SSL_CERT_FILE"] = cert[0]
        if cfg.server == "reference":
            ws_base = standin.base_url.replace("http", "ws", 1)
            server = RelayProcess(ws_base, cafile=cert[0] if cert else None,
                                  cpu=cfg.server_cpu, cwd=ROOT, env=env)
        else:
            server = ServerProcess(server=cfg.server, cpu=cfg.server_cpu, cwd=ROOT,  # type: ignore[arg-type]
                                   env=env)
        server.start()
        assert server.process is not None
        pid = server.process.pid
        if cfg.warmup:
            warm = _plan(cfg, [WARMUP_CALL], 1, server.http_url, server.ws_url, 0.0, 1.2, 0.5)
            _run_generators(cfg, [warm], workdir, tag + "-warmup")
        time.sleep(0.5)
        samples["rss_base"] = rss_bytes(pid)

        n_gen = max(1, math.ceil(cfg.n / cfg.calls_per_generator))
        indices = list(range(cfg.n))
        audio_s = cfg.settle + cfg.duration
        plans = [
            _plan(cfg, indices[g::n_gen], cfg.n, server.http_url, server.ws_url, cfg.ramp,
                  audio_s, cfg.drain)
            for g in range(n_gen)
        ]
        window: list[float] = []
        profile_out = workdir / f"{tag}-profile.txt"

        def sampler(t0: float, gen_pids: list[int]) -> None:
            start = t0 + cfg.ramp + cfg.settle
            window[:] = [start, start + cfg.duration]

            def sample() -> None:
                delay = window[0] - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                samples["cpu0"] = cpu_seconds(pid)
                load0 = _cpu_of([standin.proc.pid, *gen_pids])
                standin0 = _cpu_of([standin.proc.pid])
                cores0 = core_busy_seconds()
                spy = None
                if cfg.profile:
                    spy = subprocess.Popen(
                        [str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
                         str(pid), "--duration", str(int(cfg.duration)), "--rate", "250",
                         "--format", "raw", "--nonblocking", "--output", str(profile_out)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    )
                peak = 0
                while time.monotonic() < window[1]:
                    peak = max(peak, rss_bytes(pid))
                    time.sleep(min(0.5, max(0.0, window[1] - time.monotonic())))
                samples["cpu1"] = cpu_seconds(pid)
                samples["load_cpu"] = _cpu_of([standin.proc.pid, *gen_pids]) - load0
                samples["standin_cpu"] = _cpu_of([standin.proc.pid]) - standin0
                cores1 = core_busy_seconds()
                for core in (cfg.server_cpu, cfg.load_cpu):
                    if core is not None and core in cores1:
                        samples[f"core{core}"] = cores1[core] - cores0.get(core, 0.0)
                samples["rss_end"] = max(peak, rss_bytes(pid))
                if spy is not None:
                    spy.wait(60)

            import threading

            thread = threading.Thread(target=sample, daemon=True)
            thread.start()
            samples_thread.append(thread)

        samples_thread: list[Any] = []
        gens = _run_generators(cfg, plans, workdir, tag, on_start=sampler)
        for thread in samples_thread:
            thread.join(30)
    finally:
        data = standin.stop()
        stop_s = exit_code = None
        if server is not None:
            t0 = time.monotonic()
            exit_code = server.stop(timeout=60.0)  # SIGTERM: calls are finalised, records written
            stop_s = time.monotonic() - t0
    result = analyze(cfg, gens, data, window, samples)
    result.shutdown_s = stop_s
    # uvicorn re-raises SIGTERM once its graceful shutdown is done, so the signal is its exit.
    expected = (0, None, -signal.SIGTERM) if cfg.server != "daphne" else (0, None)
    if exit_code not in expected:
        result.errors.append(f"server exited {exit_code} after SIGTERM ({stop_s:.1f} s)")
    if cfg.server != "reference":
        check_records(cfg, gens, result)
    if result.errors and server is not None:
        with contextlib.suppress(OSError):
            tail = server.log_path.read_text(errors="replace").splitlines()[-15:]
            result.errors.append("server log tail:\n" + "\n".join(tail))
    if cfg.profile and profile_out.exists():
        result.profile = summarize_profile(profile_out.read_text())
    return result


# --------------------------------------------------------------------------------------
# analysis
# --------------------------------------------------------------------------------------


def check_records(cfg: LevelConfig, gens: list[dict[str, Any]], res: LevelResult) -> None:
    """Every call of the level left a final record and a whole transcript (nothing lost)."""
    sids = [c["call_sid"] for g in gens for c in g["calls"] if c.get("call_sid")]
    env = {**os.environ, "DATABASE_URL": cfg.database_url}
    out = subprocess.run(
        [sys.executable, "-m", "bench.records", *sids], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=120, check=False,
    )
    if out.returncode != 0:
        res.record_problems.append(f"records check failed: {out.stderr[-500:]}")
        res.records_ok = 0
        return
    report = json.loads(out.stdout)
    ok = conversations = 0
    for sid, rec in report.items():
        roles = rec.get("roles") or {}
        problems = []
        if not rec.get("exists"):
            problems.append("no Call row")
        else:
            if not rec.get("ended"):
                problems.append("not ended")
            if not rec.get("contiguous"):
                problems.append("gap in the transcript sequence")
        if problems:
            res.record_problems.append(f"{sid}: {', '.join(problems)}")
            continue
        ok += 1
        if roles.get("caller") and roles.get("assistant"):
            conversations += 1
    res.records_ok = ok
    res.conversations_ok = conversations


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
    res = LevelResult(server=cfg.server, n=cfg.n, window_s=cfg.duration)
    calls = {c["index"]: c for g in gens for c in g["calls"]}
    for index in sorted(calls):
        call = calls[index]
        if call["error"]:
            res.errors.append(f"call {index}: {call['error']}")
    res.calls_ok = sum(1 for c in calls.values() if not c["error"])

    # ---- caller → OpenAI
    arrivals: dict[int, list[tuple[float, int]]] = collections.defaultdict(list)
    session_call: list[int | None] = []
    for s in standin["sessions"]:
        counts = collections.Counter(call for _, call, _ in s["appends"])
        session_call.append(counts.most_common(1)[0][0] if counts else None)
        for t, call, counter in s["appends"]:
            arrivals[call].append((t, counter))
    res.realtime_sessions = sum(1 for c in session_call if c is not None and c in calls)
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


# --------------------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------------------


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(results: list[LevelResult]) -> str:
    """The results as a Markdown table."""
    head = (
        "| server | N | caller→OpenAI p50/p95/p99/max ms | OpenAI→caller p50/p95/p99/max ms "
        "| lost/reordered up | lost/reordered down | barge-in p50/p99/max ms (n) "
        "| CPU s/call-min | server core busy | RSS/call KiB | gen lag p99/max ms "
        "| stand-in lag p99/max ms | load core busy | other procs on server/load core "
        "| records whole / with both parties | pass |"
    )
    lines = [head, "|" + "|".join([" --- "] * (head.count("|") - 1)) + "|"]
    for r in results:
        def q(d: dict[str, Any], keys: tuple[str, ...] = ("p50", "p95", "p99", "max")) -> str:
            return "/".join(_f(d.get(k)) for k in keys)

        lines.append(
            f"| {r.server} | {r.n} | {q(r.up)} | {q(r.down)} "
            f"| {r.lost_up}/{r.reordered_up} | {r.lost_down}/{r.reordered_down} "
            f"| {q(r.barge_in, ('p50', 'p99', 'max'))} ({r.barge_in.get('n', 0)}) "
            f"| {_f(r.cpu_s_per_call_minute, 3)} | {_f(r.server_core_busy, 2)} "
            f"| {_f(r.rss_per_call_kb, 0)} | {q(r.generator_lag, ('p99', 'max'))} "
            f"| {q(r.standin_lag, ('p99', 'max'))} | {_f(r.load_core_busy, 2)} "
            f"| {_f(r.foreign_on_server_core, 2)}/{_f(r.foreign_on_load_core, 2)} "
            f"| {'-' if r.records_ok is None else f'{r.records_ok}/{r.conversations_ok}/{r.n}'} "
            f"| {'yes' if r.passed else 'no'} |"
        )
    return "\n".join(lines)


def plot(results: list[LevelResult], path: str) -> None:
    """p99 caller→OpenAI latency and CPU per call-minute against N, one line per server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for server in SERVERS:
        rows = sorted((r for r in results if r.server == server), key=lambda r: r.n)
        if not rows:
            continue
        ns = [r.n for r in rows]
        ax1.plot(ns, [r.up.get("p99") for r in rows], marker="o", label=server)
        ax2.plot(ns, [r.cpu_s_per_call_minute for r in rows], marker="o", label=server)
    ax1.axhline(P99_LIMIT_MS, color="grey", linestyle="--", linewidth=1)
    ax1.set(title="p99 added latency caller→OpenAI", xlabel="concurrent calls", ylabel="ms",
            yscale="log")
    ax2.axhline(0.30, color="grey", linestyle="--", linewidth=1)
    ax2.set(title="server CPU per call-minute (one core)", xlabel="concurrent calls",
            ylabel="CPU s / call-minute")
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# --------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------


def prepare_database(url: str) -> None:
    """Create the app's tables in ``url`` (``migrate --run-syncdb``)."""
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--run-syncdb", "-v", "0"],
        cwd=ROOT, check=True, env={**os.environ, "DATABASE_URL": url},
    )


def sweep(args: argparse.Namespace, database_url: str, workdir: str) -> list[LevelResult]:
    """For each server, run the levels upwards until one fails (then stop climbing)."""
    results: list[LevelResult] = []
    for server in args.servers.split(","):
        for n in [int(x) for x in args.levels.split(",")]:
            cfg = LevelConfig(server=server, n=n, duration=args.duration,
                              calls_per_generator=args.calls_per_generator,
                              database_url=database_url, workdir=workdir, tls=args.tls)
            started = time.monotonic()
            result = run_level(cfg)
            results.append(result)
            print(f"{server:9s} N={n:4d}  up p99={_f(result.up.get('p99'))} ms  "
                  f"lost={result.lost_up}/{result.lost_down}  "
                  f"cpu={_f(result.cpu_s_per_call_minute, 3)} s/call-min  "
                  f"gen lag p99={_f(result.generator_lag.get('p99'))} ms  "
                  f"load core {_f(result.load_core_busy, 2)} "
                  f"(stand-in {_f(result.standin_core_busy, 2)})  "
                  f"{'PASS' if result.passed else 'FAIL'}  ({time.monotonic() - started:.0f} s)",
                  flush=True)
            for error in result.errors[:3]:
                print("    ", error, flush=True)
            if not result.passed and not args.keep_going:
                break
    return results


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.run``."""
    parser = argparse.ArgumentParser(description="Benchmark the Twilio ⇄ Realtime bridge.")
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--levels", default="10,25,50,100,150")
    parser.add_argument("--duration", type=float, default=20.0, help="measured window, s")
    parser.add_argument("--calls-per-generator", type=int, default=100)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", ""),
                        help="default: a fresh SQLite file")
    parser.add_argument("--tls", action="store_true", help="wss:// to the stand-in")
    parser.add_argument("--keep-going", action="store_true",
                        help="run every level even after one fails")
    parser.add_argument("--json", help="write all results here")
    parser.add_argument("--plot", help="write the PNG plot here")
    parser.add_argument("--profile", metavar="SERVER:N",
                        help="instead of the sweep: profile the server with py-spy at N calls")
    args = parser.parse_args(argv)
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {0})  # the orchestrator stays off the server's core
    workdir = tempfile.mkdtemp(prefix="voiceconv-bench-")
    database_url = args.database_url or f"sqlite:///{workdir}/bench.sqlite3"
    prepare_database(database_url)
    print(f"machine: {os.cpu_count()} CPUs, {_cpu_model()}; python {sys.version.split()[0]}; "
          f"work dir {workdir}", flush=True)
    if args.profile:
        server, _, n = args.profile.partition(":")
        cfg = LevelConfig(server=server, n=int(n or 50), duration=args.duration,
                          database_url=database_url, workdir=workdir, profile=True,
                          tls=args.tls, calls_per_generator=args.calls_per_generator)
        result = run_level(cfg)
        print(table([result]))
        print(result.profile)
        return 0
    results = sweep(args, database_url, workdir)
    print()
    print(table(results))
    print()
    for server in args.servers.split(","):
        passing = [r.n for r in results if r.server == server and r.passed]
        print(f"{server}: highest N with p99 caller→OpenAI < {P99_LIMIT_MS:.0f} ms and zero loss: "
              f"{max(passing) if passing else 'none'}")
    if args.json:
        Path(args.json).write_bytes(dumps([asdict(r) for r in results]))
    if args.plot:
        plot(results, args.plot)
    return 0


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
