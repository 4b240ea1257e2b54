"""Which calls are live, across every server process, and what happens on them as it happens.

Nothing here lives only in one process's memory that another process would need:

- A call is live while its ``Call`` row has a started stream, no end, and a fresh heartbeat.
  The process holding a call writes its name (``host:pid``) on the row when the stream starts
  and refreshes ``heartbeat_at`` every ``HEARTBEAT_SECONDS``; a call whose heartbeat is older
  than ``LIVE_TIMEOUT_SECONDS`` (its process crashed or was killed) is marked ended, reason
  ``lost``, by the next process that looks (:func:`sweep_lost_calls`).
- What happens on a call (turns, tool calls, key presses, control actions, its start and end)
  is published to the call's feed group on the channel layer (:func:`feed_group`) and the list
  of live calls to :data:`LIST_GROUP`, so the admin's live monitor works whichever process
  serves the page and whichever holds the call.

It all hangs off the public signals (sent by the call's writer task, after the record is
saved), so nothing runs on the audio path; :func:`connect` wires it up from
``AppConfig.ready()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
import weakref
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db.models import Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from voiceconv import active_calls, metrics, signals
from voiceconv.conf import voiceconv_settings

logger = logging.getLogger("voiceconv.live")

#: Channel-layer group of the admin's live-call list (every call's start and end).
LIST_GROUP = "voiceconv.live"

_process_name: tuple[int, str] | None = None
#: The calls this process holds: CallSid → the consumer (weakly, it owns itself).
_held: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
_heartbeat: asyncio.Task[None] | None = None


def process_name() -> str:
    """This server process, as recorded on the calls it holds: ``"host:pid"``."""
    global _process_name
    pid = os.getpid()
    if _process_name is None or _process_name[0] != pid:  # recomputed after a fork
        _process_name = (pid, f"{socket.gethostname()}:{pid}")
    return _process_name[1]


def feed_group(call_sid: str) -> str:
    """Channel-layer group carrying one call's live feed (what the monitor page shows)."""
    return "voiceconv.feed." + "".join(c for c in call_sid if c.isalnum())[:80]


def held_calls() -> dict[str, Any]:
    """The consumers of the calls this process holds, by CallSid."""
    return dict(_held)


# --- the database's view ----------------------------------------------------------------------


def _cutoff(now: dt.datetime | None = None) -> dt.datetime:
    now = now or timezone.now()
    return now - dt.timedelta(seconds=voiceconv_settings.timeouts.live)


def live_calls(now: dt.datetime | None = None) -> Any:
    """The calls live right now across all processes (a ``Call`` queryset, oldest first)."""
    # Imported here, not at the top: the models need Django's app registry, and this module is
    # importable before it is ready.
    from voiceconv.models import Call

    cutoff = _cutoff(now)
    return (
        Call.objects.filter(ended_at__isnull=True, stream_started_at__isnull=False)
        .filter(~Q(twilio_stream_sid="") | Q(transport="sip"))
        .filter(Q(heartbeat_at__gte=cutoff) | Q(heartbeat_at__isnull=True,
                                                 stream_started_at__gte=cutoff))
        .select_related("agent")
        .order_by("stream_started_at")
    )


def sweep_lost_calls(now: dt.datetime | None = None) -> int:
    """Mark ended the calls whose process stopped sending heartbeats; returns how many."""
    # Imported here, not at the top: the models need Django's app registry, and this module is
    # importable before it is ready.
    from voiceconv.models import Call

    now = now or timezone.now()
    lost = (
        Call.objects.filter(ended_at__isnull=True, stream_started_at__isnull=False)
        .filter(~Q(twilio_stream_sid="") | Q(transport="sip"))
        .annotate(last_seen=Coalesce("heartbeat_at", "stream_started_at"))
        .filter(last_seen__lt=_cutoff(now))
    )
    count = 0
    for call in lost.only("pk", "twilio_call_sid", "live_process", "status", "stream_started_at"):
        error = (
            f"the server process holding the call ({call.live_process or 'unknown'}) stopped "
            f"sending heartbeats"
        )
        updates: dict[str, Any] = {
            "ended_at": now, "end_reason": Call.EndReason.LOST, "error": error, "updated_at": now,
        }
        if call.status not in Call.FINAL_STATUSES:
            updates["status"] = Call.Status.FAILED
        if call.stream_started_at is not None:
            updates["duration_seconds"] = round(
                max((now - call.stream_started_at).total_seconds(), 0.0), 3
            )
        # Only if still unended: the holding process may have finished it meanwhile.
        if Call.objects.filter(pk=call.pk, ended_at__isnull=True).update(**updates):
            count += 1
            logger.warning("call %s marked ended: %s", call.twilio_call_sid, error)
    return count


def _beat(call_sids: list[str], now: dt.datetime) -> None:
    # Imported here, not at the top: the models need Django's app registry, and this module is
    # importable before it is ready.
    from voiceconv.models import Call

    if call_sids:
        Call.objects.filter(twilio_call_sid__in=call_sids, ended_at__isnull=True).update(
            heartbeat_at=now, live_process=process_name()
        )
    sweep_lost_calls(now)


async def _heartbeat_loop() -> None:
    failures = 0
    while True:
        await asyncio.sleep(voiceconv_settings.timeouts.heartbeat)
        for consumer in list(_held.values()):
            metrics.observe_consumer(consumer)
        try:
            await database_sync_to_async(_beat, thread_sensitive=False)(
                list(_held), timezone.now()
            )
            failures = 0
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures += 1
            if failures == 1 or failures % 30 == 0:
                logger.warning("heartbeat failed (%d in a row): %s: %s", failures,
                               type(exc).__name__, exc)


def _ensure_heartbeat() -> None:
    global _heartbeat
    loop = asyncio.get_running_loop()
    if _heartbeat is None or _heartbeat.done() or _heartbeat.get_loop() is not loop:
        _heartbeat = loop.create_task(_heartbeat_loop(), name="voiceconv-heartbeat")


# --- the feed ---------------------------------------------------------------------------------


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def call_summary(call: Any) -> dict[str, Any]:
    """What the live list shows of a call (JSON-ready)."""
    first_audio_ms = None
    if call.first_audio_at is not None and call.stream_started_at is not None:
        first_audio_ms = int((call.first_audio_at - call.stream_started_at).total_seconds() * 1000)
    return {
        "call_sid": call.twilio_call_sid,
        "pk": call.pk,
        "agent": str(call.agent) if call.agent_id else "",
        "from": call.from_number,
        "to": call.to_number,
        "direction": call.direction,
        "started_at": _iso(call.stream_started_at),
        "first_audio_ms": first_audio_ms,
        "process": call.live_process,
        "ended_at": _iso(call.ended_at),
        "end_reason": call.end_reason,
        "status": call.status,
    }


def entry_event(entry: Any) -> dict[str, Any]:
    """A transcript entry as a feed event (JSON-ready)."""
    return {
        "event": "turn",
        "sequence": entry.sequence,
        "role": entry.role,
        "text": entry.text,
        "offset_ms": entry.offset_ms,
        "latency_ms": entry.latency_ms,
        "first_audio_ms": entry.first_audio_ms,
        "model_ms": entry.model_ms,
        "bridge_ms": entry.bridge_ms,
        "interrupted": entry.interrupted,
        "heard_text": entry.heard_part if entry.interrupted else "",
        "unheard_text": entry.unheard_text,
    }


async def publish(call_sid: str, event: dict[str, Any], *, to_list: bool = False) -> None:
    """Send ``event`` to the call's feed group (and the live list); never raises."""
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": "voiceconv.feed", "call_sid": call_sid, "event": event}
    groups = [feed_group(call_sid)] + ([LIST_GROUP] if to_list else [])
    for group in groups:
        try:
            await layer.group_send(group, message)
        except Exception as exc:
            logger.info("call %s: live feed message not sent: %s: %s", call_sid,
                        type(exc).__name__, exc)


# --- signal receivers (in the process holding the call, off the audio path) -------------------


def _mark_live(pk: int) -> Any:
    # Imported here, not at the top: the models need Django's app registry, and this module is
    # importable before it is ready.
    from voiceconv.models import Call

    Call.objects.filter(pk=pk, ended_at__isnull=True).update(
        live_process=process_name(), heartbeat_at=timezone.now()
    )
    return Call.objects.select_related("agent").get(pk=pk)


def _consumer_for(info: Any) -> Any:
    for consumer in list(active_calls.LIVE):
        if getattr(consumer, "info", None) is info:
            return consumer
    return None


async def on_call_started(sender: Any, call: Any, info: Any = None, **kwargs: Any) -> None:
    consumer = _consumer_for(info)
    if consumer is not None:
        _held[call.twilio_call_sid] = consumer
    _ensure_heartbeat()
    metrics.CALLS_STARTED.inc()
    call = await database_sync_to_async(_mark_live, thread_sensitive=False)(call.pk)
    await publish(call.twilio_call_sid, {"event": "started", "call": call_summary(call)},
                  to_list=True)


async def on_call_ended(sender: Any, call: Any, reason: str = "", **kwargs: Any) -> None:
    consumer = _held.pop(call.twilio_call_sid, None)
    if consumer is not None:
        metrics.observe_consumer(consumer, final=True)
    metrics.call_ended(call, reason)
    # In a thread: the summary may load the call's agent.
    summary = await database_sync_to_async(call_summary, thread_sensitive=False)(call)
    await publish(call.twilio_call_sid, {"event": "ended", "call": summary}, to_list=True)


async def on_transcript_entry(sender: Any, call: Any, entry: Any, **kwargs: Any) -> None:
    metrics.turn_recorded(entry)
    event = entry_event(entry)
    if call.first_audio_at is not None and call.stream_started_at is not None:
        event["first_audio_ms"] = int(
            (call.first_audio_at - call.stream_started_at).total_seconds() * 1000
        )
    await publish(call.twilio_call_sid, event)


async def on_tool_invoked(sender: Any, call: Any, invocation: Any, **kwargs: Any) -> None:
    metrics.tool_invoked(invocation)


def connect() -> None:
    """Connect the receivers (from ``AppConfig.ready()``; idempotent)."""
    signals.call_started.connect(on_call_started, dispatch_uid="voiceconv.live.started")
    signals.call_ended.connect(on_call_ended, dispatch_uid="voiceconv.live.ended")
    signals.transcript_entry.connect(on_transcript_entry, dispatch_uid="voiceconv.live.entry")
    signals.tool_invoked.connect(on_tool_invoked, dispatch_uid="voiceconv.live.tool")


async def stop_heartbeat() -> None:
    """Stop this process's heartbeat task (tests)."""
    global _heartbeat
    task, _heartbeat = _heartbeat, None
    if task is not None:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
