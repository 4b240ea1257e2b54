"""Running one benchmark level: the processes (server, stand-in, load generators), the
``/proc`` sampling over the measured window, the optional py-spy profile, the records check."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.analysis import _cpu_of, analyze, summarize_profile
from bench.common import core_busy_seconds, cpu_seconds, dumps, loads, rss_bytes
from bench.levels import (
    AUTH_TOKEN,
    OPENAI_KEY,
    PUBLIC_URL,
    ROOT,
    WARMUP_CALL,
    YARDSTICKS,
    LevelConfig,
    LevelResult,
)
from voiceconv.testing.server import ServerProcess

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
        "min_audio_s": cfg.min_audio_s,
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
    tag = cfg.tag
    if cfg.server not in YARDSTICKS:
        set_preconnect(cfg)
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
            # SIGTERM at the end finalises whatever is still live at once (no drain).
            "VOICECONV_DRAIN_SECONDS": "0",
            **cfg.server_env,
        }
        if cert:
            env["SSL_CERT_FILE"] = cert[0]
        if cfg.server == "reference":
            ws_base = standin.base_url.replace("http", "ws", 1)
            server = RelayProcess(ws_base, cafile=cert[0] if cert else None,
                                  cpu=cfg.server_cpu, cwd=ROOT, env=env)
        elif cfg.server == "channels":
            server = ServerProcess("bench.minimal_channels:application", server="uvicorn",
                                   cpu=cfg.server_cpu, cwd=ROOT, env=env,
                                   uvicorn_ws=cfg.uvicorn_ws, uvicorn_loop=cfg.uvicorn_loop)
        else:
            server = ServerProcess(server=cfg.server, cpu=cfg.server_cpu, cwd=ROOT,  # type: ignore[arg-type]
                                   env=env, uvicorn_ws=cfg.uvicorn_ws,
                                   uvicorn_loop=cfg.uvicorn_loop)
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

        def py_spy(seconds: float) -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
                 str(pid), "--duration", str(max(1, int(seconds))), "--rate", "250",
                 "--format", "raw", "--nonblocking", "--output", str(profile_out)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )

        def sampler(t0: float, gen_pids: list[int]) -> None:
            start = t0 + cfg.ramp + cfg.settle
            window[:] = [start, start + cfg.duration]
            if cfg.profile and cfg.profile_start:
                py_spy(cfg.ramp + cfg.settle)  # the calls' entry: webhooks, claims, connects

            def sample() -> None:
                delay = window[0] - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                samples["cpu0"] = cpu_seconds(pid)
                load0 = _cpu_of([standin.proc.pid, *gen_pids])
                standin0 = _cpu_of([standin.proc.pid])
                cores0 = core_busy_seconds()
                spy = None
                if cfg.profile and not cfg.profile_start:
                    spy = py_spy(cfg.duration)
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

            thread = threading.Thread(target=sample, daemon=True)
            thread.start()
            samples_thread.append(thread)

        samples_thread: list[Any] = []
        gens = _run_generators(cfg, plans, workdir, tag, on_start=sampler)
        for thread in samples_thread:
            thread.join(30)
    finally:
        # The server stops first, while OpenAI's stand-in still answers: its calls are
        # finalised (records written) as they would be in production, with OpenAI still there.
        stop_s = exit_code = None
        if server is not None:
            t0 = time.monotonic()
            exit_code = server.stop(timeout=180.0)  # SIGTERM: calls are finalised, records written
            stop_s = time.monotonic() - t0
        data = standin.stop()
    result = analyze(cfg, gens, data, window, samples)
    result.shutdown_s = stop_s
    # uvicorn re-raises SIGTERM once its graceful shutdown is done, so the signal is its exit.
    expected = (0, None, -signal.SIGTERM) if cfg.server != "daphne" else (0, None)
    if exit_code not in expected:
        result.errors.append(f"server exited {exit_code} after SIGTERM ({stop_s:.1f} s)")
    if cfg.server not in YARDSTICKS:
        check_records(cfg, gens, result)
    if result.errors and server is not None:
        with contextlib.suppress(OSError):
            lines = 15 if exit_code in expected else 120  # a hung stop: the threads' stacks
            tail = server.log_path.read_text(errors="replace").splitlines()[-lines:]
            result.errors.append("server log tail:\n" + "\n".join(tail))
    if cfg.profile and profile_out.exists():
        result.profile = summarize_profile(profile_out.read_text())
    return result


def set_preconnect(cfg: LevelConfig) -> None:
    """Turn the default agent's pre-connect on or off for the level (the database is shared
    by the levels of a run)."""
    code = ("from voiceconv.models import Agent; "
            f"Agent.objects.filter(is_default=True).update(preconnect={cfg.preconnect!r})")
    subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, check=True,
                   env={**os.environ, "DATABASE_URL": cfg.database_url}, timeout=120)


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
