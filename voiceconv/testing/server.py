"""Run a project's ASGI application in a real server process on loopback.

End-to-end tests (and the benchmark) need the real thing: a separate process, a real ASGI
server (daphne or uvicorn), real sockets, the real ``openai`` SDK pointed at the Realtime
stand-in through ``OPENAI_BASE_URL``. :class:`ServerProcess` starts one and stops it::

    with ServerProcess(env={"OPENAI_BASE_URL": standin_url}) as server:
        server.http_url   # "http://127.0.0.1:PORT"
        server.ws_url     # "ws://127.0.0.1:PORT"
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Literal

__all__ = ["ServerProcess", "free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerProcess:
    """An ASGI server process serving ``application`` on 127.0.0.1."""

    def __init__(
        self,
        application: str = "project.asgi:application",
        *,
        server: Literal["daphne", "uvicorn"] = "daphne",
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        startup_timeout: float = 60.0,
        cpu: int | None = None,
        uvicorn_ws: str = "websockets-sansio",
        uvicorn_loop: str = "auto",
    ) -> None:
        self.application = application
        self.server = server
        self.port = port or free_port()
        self.env = dict(env or {})
        self.cwd = Path(cwd) if cwd else Path.cwd()
        self.startup_timeout = startup_timeout
        self.cpu = cpu
        self.uvicorn_ws = uvicorn_ws
        self.uvicorn_loop = uvicorn_loop
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - kept open for the process
            prefix="voiceconv-server-", suffix=".log", delete=False
        )
        self.log_path = Path(self._log.name)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        if self.server == "uvicorn":
            cmd = [sys.executable, "-m", "uvicorn", self.application, "--host", "127.0.0.1",
                   "--port", str(self.port), "--log-level", "warning", "--ws", self.uvicorn_ws,
                   "--loop", self.uvicorn_loop, "--lifespan", "auto"]
        else:
            cmd = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port),
                   self.application]
        if self.cpu is not None and sys.platform.startswith("linux"):
            cmd = ["taskset", "-c", str(self.cpu), *cmd]
        return cmd

    def start(self) -> ServerProcess:
        env = {**os.environ, **self.env}
        env.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONFAULTHANDLER"] = "1"  # a server that hangs on stop dumps its threads (stop())
        self.process = subprocess.Popen(
            self.command(), cwd=self.cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited at start:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not listen within {self.startup_timeout} s:\n"
                           f"{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code.

        A server still running after ``timeout`` is first sent SIGABRT, so that Python's fault
        handler writes every thread's stack to the log (:meth:`log_tail` shows where it hung).
        """
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGABRT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5.0)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self._log.close()
        return proc.returncode

    def log_text(self) -> str:
        if not self._log.closed:  # still written by a running server
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
