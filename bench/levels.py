"""What a benchmark level is (:class:`LevelConfig`) and what it measured (:class:`LevelResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
AUTH_TOKEN = "bench-auth-token-0123456789abcdef"
OPENAI_KEY = "sk-bench"
PUBLIC_URL = "https://voice.bench.test"
SERVERS = ("daphne", "uvicorn", "channels", "reference")
#: Servers without the app (no records to check).
YARDSTICKS = ("channels", "reference")
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
    #: Profile the start of the level (the calls' ramp and settle) instead of the window.
    profile_start: bool = False
    warmup: bool = True
    #: Seconds over which the N calls enter (None: 2 s up to 100 calls, 50 calls/s beyond).
    ramp_s: float | None = None
    #: Each call streams at least this much audio after its start, however late it entered.
    min_audio_s: float = 0.0
    #: Extra environment for the server process (e.g. ``VOICECONV_CONNECT_TIMEOUT``).
    server_env: dict[str, str] = field(default_factory=dict)
    #: The default agent pre-connects while the phone rings (``Agent.preconnect``; the app's
    #: servers only).
    preconnect: bool = False
    #: uvicorn's WebSocket implementation and event loop (``--ws``, ``--loop``), for the app and
    #: the minimal Channels yardstick alike, so that the two compare like for like.
    uvicorn_ws: str = "websockets-sansio"
    uvicorn_loop: str = "auto"

    @property
    def tag(self) -> str:
        """The level's name in file names and tables: ``uvicorn-10``, ``uvicorn-10-pre``."""
        return f"{self.server}-{self.n}" + ("-pre" if self.preconnect else "")

    @property
    def ramp(self) -> float:
        if self.ramp_s is not None:
            return self.ramp_s
        return max(2.0, self.n / 50)


@dataclass
class LevelResult:
    """The figures of one level (latencies in ms)."""

    server: str
    n: int
    window_s: float
    #: The level ran with the default agent's pre-connect on.
    preconnect: bool = False
    calls_ok: int = 0
    #: Incoming-call webhook: calls whose webhook was answered (200 with TwiML), and the time
    #: from the POST to its answer at the caller (ms).
    webhooks_answered: int = 0
    webhook: dict[str, Any] = field(default_factory=dict)
    #: Time to first audio: webhook sent (stream opened, without a webhook) → the greeting's
    #: first audio at the caller (ms).
    ttfa: dict[str, Any] = field(default_factory=dict)
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
    #: Every session the stand-in saw, the warm-up call's and any without audio (a
    #: pre-connected session the stream did not adopt) included.
    sessions_opened: int = 0
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
