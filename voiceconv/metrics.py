"""Prometheus metrics, through the maintained ``prometheus-client`` library.

Nothing here runs on the audio path: the call core counts frames in plain integers
(``CallState.frames_in`` / ``frames_out``) and the consumer counts bad input per kind; this
module reads those counts off the calls a process holds at each heartbeat and when a call
ends, and observes everything else (calls, tools, timings) from the signals the call's writer
task sends after saving a record.

Two timings are taken by the consumer itself and kept as plain integers (nanoseconds) until
the same heartbeat observes them: the added latency of one caller frame in
``LATENCY_SAMPLE_FRAMES`` (from the frame taken off Twilio's socket to its send to OpenAI
returning; every other frame costs one integer decrement), and each barge-in's reaction (from
the OpenAI event that caused it, handed over by the event loop, to the Twilio ``clear`` and the
``truncate`` sent).

Several worker processes on one host: set the ``PROMETHEUS_MULTIPROC_DIR`` environment
variable to an empty directory (the same for all of them, emptied at each deployment) and
the endpoint sums every process's counters (``prometheus_client`` multiprocess mode). The
number of live calls is read from the database at scrape time, so it is right across hosts.

The endpoint (:func:`metrics_view`) answers staff users, or a request carrying
``Authorization: Bearer <VOICECONV["METRICS_TOKEN"]>``; anyone else gets 403.
"""

from __future__ import annotations

import hmac
import logging
import os
import weakref
from collections.abc import Iterator
from typing import Any

from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from voiceconv.conf import voiceconv_settings

logger = logging.getLogger("voiceconv.metrics")

_SECONDS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
#: The bridge's own share of a delay: well under a millisecond when the process keeps up.
_FAST_SECONDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                 0.5, 1.0)

CALLS_STARTED = Counter("voiceconv_calls_started", "Calls whose media stream started.")
CALLS_ENDED = Counter("voiceconv_calls_ended", "Calls that ended, by end reason.", ["reason"])
FRAMES = Counter(
    "voiceconv_frames", "Media frames: caller audio in, assistant audio out.", ["direction"]
)
BAD_INPUT = Counter("voiceconv_bad_input", "Bad Twilio input ignored, by kind.", ["kind"])
RECONNECTS = Counter(
    "voiceconv_realtime_reconnects", "New Realtime sessions opened mid-call after a drop."
)
TOOL_CALLS = Counter(
    "voiceconv_tool_calls", "Tool calls, by tool and outcome.", ["tool", "outcome"]
)
TOOL_DURATION = Histogram(
    "voiceconv_tool_duration_seconds", "How long tool calls took.", ["tool"], buckets=_SECONDS
)
FIRST_AUDIO = Histogram(
    "voiceconv_time_to_first_audio_seconds",
    "Stream start to the first assistant audio sent to the caller.", buckets=_SECONDS,
)
RESPONSE_LATENCY = Histogram(
    "voiceconv_response_latency_seconds",
    "Caller stopped speaking to the first assistant audio sent, per assistant turn.",
    buckets=_SECONDS,
)
ADDED_LATENCY = Histogram(
    "voiceconv_caller_audio_added_latency_seconds",
    "Caller audio: a frame taken off Twilio's socket to its send to OpenAI returning "
    "(one frame in LATENCY_SAMPLE_FRAMES).", buckets=_FAST_SECONDS,
)
BARGE_IN_REACTION = Histogram(
    "voiceconv_barge_in_reaction_seconds",
    "Barge-in: the OpenAI event that the caller started speaking, handed to the call, to the "
    "Twilio clear and the truncate sent.", buckets=_FAST_SECONDS,
)
BARGE_INS = Counter(
    "voiceconv_barge_ins", "Assistant turns the caller interrupted (what was heard is recorded)."
)
CONTROL_REQUESTS = Counter(
    "voiceconv_control_requests", "Control requests taken by a live call, by action and outcome.",
    ["action", "outcome"],
)

#: Counts already exported per consumer: consumer → (frames in, frames out, bad input by kind).
_exported: weakref.WeakKeyDictionary[Any, tuple[int, int, dict[str, int], int]] = (
    weakref.WeakKeyDictionary()
)


def observe_consumer(consumer: Any, *, final: bool = False) -> None:
    """Add what ``consumer``'s call counted since the last look (plain integers it keeps)."""
    session = getattr(consumer, "session", None)
    state = getattr(session, "state", None)
    frames_in = int(getattr(state, "frames_in", 0) or 0)
    frames_out = int(getattr(state, "frames_out", 0) or 0)
    bad = dict(getattr(session, "bad_input", None) or {})
    reconnects = int(getattr(consumer, "reconnects", 0) or 0)
    last_in, last_out, last_bad, last_reconnects = _exported.get(consumer, (0, 0, {}, 0))
    if frames_in > last_in:
        FRAMES.labels("in").inc(frames_in - last_in)
    if frames_out > last_out:
        FRAMES.labels("out").inc(frames_out - last_out)
    for kind, n in bad.items():
        if n > last_bad.get(kind, 0):
            BAD_INPUT.labels(kind).inc(n - last_bad.get(kind, 0))
    if reconnects > last_reconnects:
        RECONNECTS.inc(reconnects - last_reconnects)
    for ns in _take(consumer, "added_latency_ns"):
        ADDED_LATENCY.observe(ns / 1e9)
    for ns in _take(consumer, "barge_in_ns"):
        BARGE_IN_REACTION.observe(ns / 1e9)
    if final:
        _exported.pop(consumer, None)
    else:
        _exported[consumer] = (frames_in, frames_out, bad, reconnects)


def _take(consumer: Any, name: str) -> list[int]:
    """The timings (ns) ``consumer`` kept in its list ``name`` since the last look."""
    taken = getattr(consumer, name, None)
    if not taken:
        return []
    setattr(consumer, name, [])
    return list(taken)


def call_ended(call: Any, reason: str) -> None:
    CALLS_ENDED.labels(reason or "unknown").inc()
    if call.first_audio_at is not None and call.stream_started_at is not None:
        FIRST_AUDIO.observe(max((call.first_audio_at - call.stream_started_at).total_seconds(), 0))


def turn_recorded(entry: Any) -> None:
    if entry.role == "assistant":
        if entry.latency_ms is not None:
            RESPONSE_LATENCY.observe(max(entry.latency_ms, 0) / 1000)
        if entry.interrupted:
            BARGE_INS.inc()


def tool_invoked(invocation: Any) -> None:
    error = str(getattr(invocation, "error", "") or "")
    outcome = "ok" if not error else ("timeout" if "timed out" in error.lower() else "error")
    TOOL_CALLS.labels(invocation.tool_name, outcome).inc()
    if invocation.duration_ms is not None:
        TOOL_DURATION.labels(invocation.tool_name).observe(max(invocation.duration_ms, 0) / 1000)


def control_request(action: str, ok: bool) -> None:
    CONTROL_REQUESTS.labels(action, "ok" if ok else "refused").inc()


class LiveCallsCollector(Collector):
    """``voiceconv_calls_live``: the live calls across all processes, from the database."""

    def collect(self) -> Iterator[Metric]:
        # Imported here, not at the top: voiceconv.live imports this module.
        from voiceconv.live import live_calls

        gauge = GaugeMetricFamily("voiceconv_calls_live", "Calls live right now (all processes).")
        try:
            gauge.add_metric([], live_calls().count())
        except Exception as exc:  # the endpoint still answers with the counters
            logger.warning("live calls not counted: %s: %s", type(exc).__name__, exc)
            return
        yield gauge


def registry() -> CollectorRegistry:
    """This process's registry, or every process's in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Imported here: only multiprocess mode (PROMETHEUS_MULTIPROC_DIR) uses it.
        from prometheus_client import multiprocess

        reg = CollectorRegistry()
        # prometheus_client leaves this constructor unannotated.
        multiprocess.MultiProcessCollector(reg)  # type: ignore[no-untyped-call]
        return reg
    return REGISTRY


def allowed(request: HttpRequest) -> bool:
    """Staff users, or the bearer token of ``VOICECONV["METRICS_TOKEN"]``."""
    token = voiceconv_settings.METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and header.startswith("Bearer "):
        return hmac.compare_digest(header[len("Bearer "):].strip().encode(), token.encode())
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_active and user.is_staff)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """The Prometheus text exposition of voiceconv's metrics (403 without the credential)."""
    if not allowed(request):
        logger.warning("metrics refused to %s: no staff session or bearer token",
                       request.META.get("REMOTE_ADDR", "?"))
        return HttpResponse("forbidden\n", status=403, content_type="text/plain")
    reg = registry()
    output = generate_latest(reg)
    live = CollectorRegistry(auto_describe=False)
    live.register(LiveCallsCollector())
    output += generate_latest(live)
    return HttpResponse(output, content_type=CONTENT_TYPE_LATEST)
