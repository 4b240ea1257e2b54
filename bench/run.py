"""The bridge benchmark: N concurrent simulated calls against a real server process.

One command runs the sweep for the three servers and prints the table::

    uv run python -m bench.run                        # daphne, uvicorn, reference; N = 10..200
    uv run python -m bench.run --servers uvicorn --levels 50,100 --duration 20
    uv run python -m bench.run --plot docs/benchmarks.png --json /tmp/bench.json
    uv run python -m bench.run --profile daphne:50    # py-spy profile of the server under load
    uv run python -m bench.run --servers uvicorn --levels 10 --preconnect both   # first audio

Per level: a fresh server process pinned to one core (``taskset -c 1``), the Realtime stand-in
(``bench.standin``) and the load generators (``bench.loadgen``) as processes of their own on the
other core; one warm-up call; then N calls entered through the signed webhook over a ramp,
a settle period, and the measured window. See ``docs/benchmarks.md`` for what is measured.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from bench.common import dumps
from bench.levels import P99_LIMIT_MS, ROOT, SERVERS, YARDSTICKS, LevelConfig, LevelResult
from bench.report import _f, plot, preconnect_table, ratios, table
from bench.running import run_level

__all__ = ["LevelConfig", "LevelResult", "main", "run_level"]


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
    """For each server, run the levels upwards until one fails (then stop climbing); with
    ``--preconnect both``, each level runs off then on, and both run before the sweep stops."""
    results: list[LevelResult] = []
    variants = {"off": (False,), "on": (True,), "both": (False, True)}[args.preconnect]
    for server in args.servers.split(","):
        levels = [(n, pre) for n in [int(x) for x in args.levels.split(",")]
                  for pre in (variants if server not in YARDSTICKS else (False,))]
        failed = False
        for n, pre in levels:
            cfg = LevelConfig(server=server, n=n, duration=args.duration,
                              calls_per_generator=args.calls_per_generator,
                              database_url=database_url, workdir=workdir, tls=args.tls,
                              ramp_s=args.ramp, preconnect=pre, uvicorn_ws=args.uvicorn_ws,
                              uvicorn_loop=args.uvicorn_loop)
            started = time.monotonic()
            result = run_level(cfg)
            results.append(result)
            label = server + ("+pre" if pre else "")
            print(f"{label:13s} N={n:4d}  up p99={_f(result.up.get('p99'))} ms  "
                  f"first audio p50={_f(result.ttfa.get('p50'), 0)} ms  "
                  f"lost={result.lost_up}/{result.lost_down}  "
                  f"cpu={_f(result.cpu_s_per_call_minute, 3)} s/call-min  "
                  f"gen lag p99={_f(result.generator_lag.get('p99'))} ms  "
                  f"load core {_f(result.load_core_busy, 2)} "
                  f"(stand-in {_f(result.standin_core_busy, 2)})  "
                  f"{'PASS' if result.passed else 'FAIL'}  ({time.monotonic() - started:.0f} s)",
                  flush=True)
            for error in result.errors[:3]:
                print("    ", error, flush=True)
            failed = failed or not result.passed
            last_of_level = pre == variants[-1] or server in YARDSTICKS
            if failed and last_of_level and not args.keep_going:
                break  # the level's pre-connect twin runs first: the comparison needs both
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
    parser.add_argument("--ramp", type=float, default=None,
                        help="seconds over which the calls enter (default 2 s up to 100 calls)")
    parser.add_argument("--keep-going", action="store_true",
                        help="run every level even after one fails")
    parser.add_argument("--preconnect", choices=("off", "on", "both"), default="off",
                        help="the default agent pre-connects while ringing: off, on, or each "
                             "level of the app's servers run both ways")
    parser.add_argument("--uvicorn-ws", default="websockets-sansio",
                        help="uvicorn --ws (the app and the channels yardstick): "
                             "websockets-sansio, websockets or wsproto")
    parser.add_argument("--uvicorn-loop", default="auto",
                        help="uvicorn --loop (the app and the channels yardstick): auto, "
                             "asyncio or uvloop (if installed)")
    parser.add_argument("--json", help="write all results here")
    parser.add_argument("--plot", help="write the PNG plot here")
    parser.add_argument("--profile", metavar="SERVER:N",
                        help="instead of the sweep: profile the server with py-spy at N calls")
    parser.add_argument("--profile-start", action="store_true",
                        help="with --profile: the calls' entry (ramp and settle), not the window")
    args = parser.parse_args(argv)
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {0})  # the orchestrator stays off the server's core
    workdir = tempfile.mkdtemp(prefix="voiceconv-bench-")
    database_url = args.database_url or f"sqlite:///{workdir}/bench.sqlite3"
    prepare_database(database_url)
    print(f"machine: {os.cpu_count()} CPUs, {_cpu_model()}; python {sys.version.split()[0]}; "
          f"work dir {workdir}; uvicorn: --ws {args.uvicorn_ws} "
          f"--loop {args.uvicorn_loop}", flush=True)
    if args.profile:
        server, _, n = args.profile.partition(":")
        cfg = LevelConfig(server=server, n=int(n or 50), duration=args.duration,
                          database_url=database_url, workdir=workdir, profile=True,
                          profile_start=args.profile_start, tls=args.tls,
                          calls_per_generator=args.calls_per_generator,
                          uvicorn_ws=args.uvicorn_ws, uvicorn_loop=args.uvicorn_loop)
        result = run_level(cfg)
        print(table([result]))
        print(result.profile)
        return 0
    results = sweep(args, database_url, workdir)
    print()
    print(table(results))
    print()
    if "uvicorn" in args.servers:
        print(ratios(results))
        print()
    if args.preconnect != "off":
        print(preconnect_table(results))
        print()
    for server in args.servers.split(","):
        passing = [r.n for r in results if r.server == server and r.passed
                   and not r.preconnect]
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
